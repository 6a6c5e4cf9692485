#include "util/nope.h" /* BAD: util/ includes only util/ */
