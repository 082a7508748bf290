/* Names for core_status values, used in logs and metric labels. */
#include "core/status.h"

const char *
core_status_str(enum core_status st)
{
    switch (st) {
    case CORE_OK:
        return "ok";
    case CORE_ERR_NOMEM:
        return "nomem";
    case CORE_ERR_INVALID:
        return "invalid";
    case CORE_ERR_TOO_LARGE:
        return "too_large";
    case CORE_ERR_AUTH:
        return "auth";
    case CORE_ERR_NOT_FOUND:
        return "not_found";
    case CORE_ERR_DB:
        return "db";
    case CORE_ERR_UNAVAILABLE:
        return "unavailable";
    case CORE_ERR_TIMEOUT:
        return "timeout";
    case CORE_ERR_RATE_LIMIT:
        return "rate_limit";
    case CORE_ERR_UPSTREAM:
        return "upstream";
    case CORE_ERR_PERMANENT:
        return "permanent";
    case CORE_ERR_IO:
        return "io";
    case CORE_ERR_CONFIG:
        return "config";
    case CORE_ERR_CONFLICT:
        return "conflict";
    case CORE_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}
