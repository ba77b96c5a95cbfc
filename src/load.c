/* load.c - placeholder until implemented */
#include "internal.h"
