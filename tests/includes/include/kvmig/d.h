#include <stdint.h>
#include "x.h"           /* BAD: quoted in a public header */
#include <kvmig/nope.h>  /* BAD: not a public header */
