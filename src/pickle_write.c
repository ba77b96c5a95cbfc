/* pickle_write.c - placeholder until implemented */
#include "internal.h"
