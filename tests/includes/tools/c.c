#include <kvmig/d.h>
#include "c.h"
#include "util/internal.h" /* BAD: tools/ uses only the public API */
#include <transport/wire.h> /* BAD: the same, by angle brackets */
