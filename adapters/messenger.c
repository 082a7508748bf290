/*
 * Messenger Platform adapter (Facebook Pages): webhooks with object "page"
 * and sends through POST {graph}/me/messages with the Page token. The
 * envelope and Send API body are shared with Instagram in meta_messaging.c.
 * Facts: platforms.md §3.
 */
#include "adapters/meta.h"

#define MS_PLATFORM "messenger"

#define MS_LIMITS                                                    \
    {                                                                \
        .max_text = 2000, .unit = ADP_UNIT_CHARS, .max_buttons = 13, \
        .max_button_title = 20, .max_text_buttons = 2000             \
    }

static const struct adp_limits ms_limits = MS_LIMITS;

static bool
ms_enabled(const struct core_config *cfg)
{
    return cfg && adp_meta_enabled(cfg, cfg->messenger_page_token);
}

static enum core_status
ms_parse(const char *body, size_t len, struct adp_batch *out)
{
    return adp_meta_messaging_parse(body, len, out, "page", MS_PLATFORM);
}

/* The Page token addresses one page, so "me" is the channel; quoting a user
 * message (reply_to) is not documented for the Page Send API. */
static enum core_status
/* NOLINTNEXTLINE(readability-function-size): 9 parameters, from adapter.h */
ms_send_text(const struct core_config *cfg, CURL *curl, const char *channel,
             const char *user_id, const char *text, const char *reply_to,
             const struct adp_button *buttons, int nbuttons,
             struct adp_send_result *res)
{
    char url[2400];
    struct adp_meta_dest dest = { &ms_limits, cfg->messenger_page_token, url };

    (void)channel;
    (void)reply_to;
    adp_send_result_init(res);
    if (!ms_enabled(cfg))
        return CORE_ERR_CONFIG;
    if (adp_meta_url(url, sizeof(url), cfg->graph_api_base, "me") != CORE_OK)
        return CORE_ERR_CONFIG;
    return adp_meta_messaging_send(&dest, curl, user_id, text, buttons,
                                   nbuttons, res);
}

static enum core_status
ms_read_posts(const struct core_config *cfg, const char *channel,
              const char *user_id, const char *message_id, struct adp_post *out,
              int max, int *n)
{
    char url[2400];

    (void)channel;
    (void)message_id;
    *n = 0;
    if (!ms_enabled(cfg))
        return CORE_ERR_CONFIG;
    if (adp_meta_url(url, sizeof(url), cfg->graph_api_base, "me") != CORE_OK)
        return CORE_ERR_CONFIG;
    return adp_meta_messaging_read_posts(cfg->messenger_page_token, url,
                                         user_id, out, max, n);
}

const struct adp_adapter adp_messenger_adapter = {
    .name = MS_PLATFORM,
    .limits = MS_LIMITS,
    .enabled = ms_enabled,
    .handshake = adp_meta_handshake,
    .authenticate = adp_meta_authenticate,
    .parse = ms_parse,
    .send_text = ms_send_text,
    .read_posts = ms_read_posts,
};
