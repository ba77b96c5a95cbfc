/*
 safetensors_read.c - reads safetensors files into a doc (sdict_load of a safetensors file).
*/
#include "internal.h"
