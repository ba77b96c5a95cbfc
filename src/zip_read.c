/* zip_read.c - placeholder until implemented */
#include "internal.h"
