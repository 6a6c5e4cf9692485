#include <stdio.h>
#include "transport/a.h"
#include "util/internal.h"
#include "cas/internal.h"
#include "pager/synth_internal.h" /* BAD: another folder's private header */
#include "session.h"              /* BAD: bare name */
