/*
 * Instagram messaging adapter: webhooks with object "instagram" (same
 * entry[].messaging[] envelope as Messenger) and sends through
 * POST {graph}/{ig_account_id}/messages with the Instagram token. Text is
 * limited in UTF-8 bytes, not characters. Facts: platforms.md §4.
 */
#include "adapters/meta.h"

#define IG_PLATFORM "instagram"

#define IG_LIMITS                                                    \
    {                                                                \
        .max_text = 1000, .unit = ADP_UNIT_BYTES, .max_buttons = 13, \
        .max_button_title = 20, .max_text_buttons = 1000             \
    }

static const struct adp_limits ig_limits = IG_LIMITS;

static bool
ig_enabled(const struct core_config *cfg)
{
    return cfg && adp_meta_enabled(cfg, cfg->instagram_token);
}

static enum core_status
ig_parse(const char *body, size_t len, struct adp_batch *out)
{
    return adp_meta_messaging_parse(body, len, out, "instagram", IG_PLATFORM);
}

static enum core_status
/* NOLINTNEXTLINE(readability-function-size): 9 parameters, from adapter.h */
ig_send_text(const struct core_config *cfg, CURL *curl, const char *channel,
             const char *user_id, const char *text, const char *reply_to,
             const struct adp_button *buttons, int nbuttons,
             struct adp_send_result *res)
{
    char url[2400];
    struct adp_meta_dest dest = { &ig_limits, cfg->instagram_token, url };

    (void)reply_to;
    adp_send_result_init(res);
    if (!ig_enabled(cfg))
        return CORE_ERR_CONFIG;
    if (!adp_meta_path_safe(channel))
        return CORE_ERR_INVALID;
    if (adp_meta_url(url, sizeof(url), cfg->graph_api_base, channel) != CORE_OK)
        return CORE_ERR_CONFIG;
    return adp_meta_messaging_send(&dest, curl, user_id, text, buttons,
                                   nbuttons, res);
}

static enum core_status
ig_read_posts(const struct core_config *cfg, const char *channel,
              const char *user_id, const char *message_id, struct adp_post *out,
              int max, int *n)
{
    char url[2400];

    (void)message_id;
    *n = 0;
    if (!ig_enabled(cfg))
        return CORE_ERR_CONFIG;
    if (!adp_meta_path_safe(channel))
        return CORE_ERR_INVALID;
    if (adp_meta_url(url, sizeof(url), cfg->graph_api_base, channel) != CORE_OK)
        return CORE_ERR_CONFIG;
    return adp_meta_messaging_read_posts(cfg->instagram_token, url, user_id,
                                         out, max, n);
}

const struct adp_adapter adp_instagram_adapter = {
    .name = IG_PLATFORM,
    .limits = IG_LIMITS,
    .enabled = ig_enabled,
    .handshake = adp_meta_handshake,
    .authenticate = adp_meta_authenticate,
    .parse = ig_parse,
    .send_text = ig_send_text,
    .read_posts = ig_read_posts,
};
