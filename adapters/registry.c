/*
 * The table of chat-platform adapters. Adding a platform: define
 * `const struct adp_adapter adp_<name>_adapter` in adapters/<name>.c and add
 * one X(<name>) line to ADP_REGISTRY below.
 */
#include <string.h>

#include "adapters/adapter.h"

#define ADP_REGISTRY(X) \
    X(whatsapp)         \
    X(messenger)        \
    X(instagram)

#define ADP_DECLARE(n) extern const struct adp_adapter adp_##n##_adapter;
#define ADP_ENTRY(n)   &adp_##n##_adapter,

ADP_REGISTRY(ADP_DECLARE)

/* clang-format off */
static const struct adp_adapter *const adp_registry[] = {
    ADP_REGISTRY(ADP_ENTRY)
};
/* clang-format on */

const struct adp_adapter *
adp_find(const char *name)
{
    size_t i;

    if (!name)
        return NULL;
    for (i = 0; i < sizeof(adp_registry) / sizeof(adp_registry[0]); i++)
        if (strcmp(adp_registry[i]->name, name) == 0)
            return adp_registry[i];
    return NULL;
}

const struct adp_adapter *const *
adp_all(size_t *n)
{
    if (n)
        *n = sizeof(adp_registry) / sizeof(adp_registry[0]);
    return adp_registry;
}
