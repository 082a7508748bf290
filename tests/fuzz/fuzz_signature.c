/*
 * libFuzzer target: X-Hub-Signature-256 verification. Input: one length
 * byte, that many bytes of header value, then the body. Checks that a
 * random header never verifies... unless it is the real HMAC, and that the
 * real HMAC of the body always verifies.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

#define FUZZ_SECRET "fuzz-app-secret"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char header[256], good[72], hex[65];
    const char *body;
    size_t hlen, blen;
    enum core_status st;
    bool esc;

    if (size < 1)
        return 0;
    hlen = data[0];
    if (hlen > size - 1)
        hlen = size - 1;
    memcpy(header, data + 1, hlen);
    header[hlen] = '\0';
    body = (const char *)data + 1 + hlen;
    blen = size - 1 - hlen;

    adp_hmac_sha256_hex(FUZZ_SECRET, body, blen, hex);
    snprintf(good, sizeof(good), "sha256=%s", hex);
    st = adp_meta_verify_signature(FUZZ_SECRET, header, body, blen, &esc);
    if (st == CORE_OK && strncasecmp(header + 7, hex, 64) != 0 && !esc)
        abort(); /* accepted something that is not the raw-body HMAC */
    if (st != CORE_OK && st != CORE_ERR_AUTH)
        abort();
    if (adp_meta_verify_signature(FUZZ_SECRET, good, body, blen, &esc) !=
            CORE_OK ||
        esc)
        abort();
    if (adp_meta_verify_signature("", good, body, blen, NULL) != CORE_ERR_AUTH)
        abort();
    return 0;
}
