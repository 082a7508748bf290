/*
 * The one status enum of Parley. Library codes (CURLcode, PGresult status,
 * MHD results, OpenSSL returns) are translated into these where the library
 * is called and never leak upward.
 */
#ifndef CORE_STATUS_H
#define CORE_STATUS_H

enum core_status {
    CORE_OK = 0,
    CORE_ERR_NOMEM,       /* allocation failed */
    CORE_ERR_INVALID,     /* bad input: malformed, out of range */
    CORE_ERR_TOO_LARGE,   /* input exceeds a hard limit */
    CORE_ERR_AUTH,        /* signature or token mismatch */
    CORE_ERR_NOT_FOUND,   /* no such thing */
    CORE_ERR_DB,          /* database error (query failed) */
    CORE_ERR_UNAVAILABLE, /* dependency unreachable: retry later */
    CORE_ERR_TIMEOUT,     /* deadline passed */
    CORE_ERR_RATE_LIMIT,  /* upstream asked us to slow down */
    CORE_ERR_UPSTREAM,    /* upstream answered with an error */
    CORE_ERR_PERMANENT,   /* upstream error that retrying will not fix */
    CORE_ERR_IO,          /* system call failed */
    CORE_ERR_CONFIG,      /* configuration invalid */
    CORE_ERR_CONFLICT,    /* state changed under us (lost lease, checksum) */
    CORE_ERR_INTERNAL     /* invariant violated */
};

/* Short stable name for logs and metrics labels ("ok", "nomem", ...). */
const char *core_status_str(enum core_status st);

#endif
