/* libFuzzer target: the whatsapp webhook parser (scripts/fuzz.sh). */
#include "tests/fuzz/fuzz_common.h"

extern const struct adp_adapter adp_whatsapp_adapter;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_parse(&adp_whatsapp_adapter, data, size);
}
