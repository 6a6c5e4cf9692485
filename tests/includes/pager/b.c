#include "util/internal.h"
#include "cas/internal.h" /* BAD: a folder above */
