/*
 * libFuzzer target: adp_split_text. Input: two bytes of limit/unit, then
 * the text (up to the first NUL). Every piece must fit, be non-empty and be
 * valid UTF-8 when the input is, and the pieces must rebuild the text up to
 * the whitespace at the cuts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

#define MAXP 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *p[MAXP];
    enum adp_text_unit unit;
    size_t max, len, plen;
    const char *t;
    char *text;
    int n, i;

    if (size < 2)
        return 0;
    unit = data[0] & 1 ? ADP_UNIT_BYTES : ADP_UNIT_CHARS;
    max = 4 + (size_t)(data[1] % 64) * (data[0] & 2 ? 16 : 1);
    text = malloc(size - 1);
    if (!text)
        return 0;
    memcpy(text, data + 2, size - 2);
    text[size - 2] = '\0';
    len = strlen(text);
    n = adp_split_text(text, max, unit, p, MAXP);
    if (n < 0 && len < MAXP)
        abort(); /* every piece has a byte at least: MAXP is enough */
    if (n < 0) {
        free(text);
        return 0;
    }
    t = text;
    for (i = 0; i < n; i++) {
        plen = strlen(p[i]);
        if (plen == 0 || ws(p[i][0]) || ws(p[i][plen - 1]))
            abort();
        if ((unit == ADP_UNIT_BYTES ? plen : adp_utf8_count(p[i])) > max)
            abort();
        if (adp_utf8_valid(text, len) && !adp_utf8_valid(p[i], plen))
            abort();
        while (ws(*t))
            t++;
        if (strncmp(t, p[i], plen) != 0)
            abort();
        t += plen;
        free(p[i]);
    }
    while (ws(*t))
        t++;
    if (*t)
        abort();
    free(text);
    return 0;
}
