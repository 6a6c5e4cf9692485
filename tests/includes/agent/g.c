#include "agent/g.h"
#include "util/internal.h"
#include "transport/session.h" /* BAD: the agent uses the library's public API only */
