#include <util/internal.h> /* BAD: angle brackets for a header of the tree */
#include "pager/internal.h"
