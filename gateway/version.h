/* Parley's version, reported by `parley version` and parley_build_info. */
#ifndef GATEWAY_VERSION_H
#define GATEWAY_VERSION_H

#define PARLEY_VERSION "0.1.0"

#endif
