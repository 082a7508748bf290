/*
 * Shared by the adapter parse fuzz targets: parse one input with an
 * adapter and check the batch invariants (any violation aborts, which
 * libFuzzer reports as a crash).
 */
#ifndef TESTS_FUZZ_FUZZ_COMMON_H
#define TESTS_FUZZ_FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

static size_t fuzz_sink;

static void
fuzz_touch(const char *s)
{
    if (s) {
        fuzz_sink += strlen(s);
        if (!adp_utf8_valid(s, strlen(s)))
            abort();
    }
}

static void
fuzz_check_batch(const struct adp_batch *b, const char *platform)
{
    const struct adp_event *e;
    size_t i, unknown = 0;

    for (i = 0; i < b->n; i++) {
        e = &b->events[i];
        if ((unsigned)e->kind > ADP_EV_UNKNOWN ||
            (unsigned)e->msg_type > ADP_MSG_UNSUPPORTED ||
            (unsigned)e->status > ADP_STATUS_FAILED || !e->raw ||
            !e->dedupe_key || strlen(e->dedupe_key) > ADP_META_KEY_MAX ||
            !e->platform || strcmp(e->platform, platform) != 0)
            abort();
        if (e->kind == ADP_EV_UNKNOWN)
            unknown++;
        else if (!e->channel || (!e->user_id && e->kind != ADP_EV_STATUS))
            abort(); /* a WhatsApp status may lack its recipient */
        if (e->kind == ADP_EV_MESSAGE && e->msg_type == ADP_MSG_TEXT &&
            !e->text)
            abort();
        fuzz_touch(e->channel);
        fuzz_touch(e->user_id);
        fuzz_touch(e->user_phone);
        fuzz_touch(e->event_id);
        fuzz_touch(e->dedupe_key);
        fuzz_touch(e->context_id);
        fuzz_touch(e->text);
        fuzz_touch(e->media_id);
        fuzz_touch(e->mime_type);
        fuzz_touch(e->payload);
        fuzz_touch(e->emoji);
        fuzz_touch(e->error_title);
        fuzz_touch(e->referral.source_type);
        fuzz_touch(e->referral.source_id);
        fuzz_touch(e->referral.source_url);
        fuzz_touch(e->referral.headline);
        fuzz_touch(e->referral.body);
        fuzz_touch(e->referral.media_type);
        fuzz_touch(e->referral.media_url);
        fuzz_touch(e->referral.ctwa_clid);
        fuzz_touch(e->referral.ad_id);
        fuzz_touch(e->referral.ref);
        fuzz_touch(e->referral.type);
        if (e->platform_ts_ms < 0 || e->watermark_ms < 0)
            abort();
    }
    if (unknown != b->unknown)
        abort();
}

static int
fuzz_parse(const struct adp_adapter *ad, const uint8_t *data, size_t size)
{
    struct adp_batch b;
    enum core_status st;

    adp_batch_init(&b);
    st = ad->parse((const char *)data, size, &b);
    if (st == CORE_OK)
        fuzz_check_batch(&b, ad->name);
    else if (b.n != 0 || b.root != NULL)
        abort();
    adp_batch_free(&b);
    return 0;
}

#endif
