/* Context building within a token budget; see context.h. */
#include "inference/context.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
inf_ctx_estimate_tokens(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    return (int)((n + 3) / 4) + 4;
}

void
inf_ctx_turns_free(struct inf_ctx_turn *t, int n)
{
    int i;

    for (i = 0; t && i < n; i++) {
        free(t[i].role);
        free(t[i].content);
    }
    free(t);
}

char *
inf_ctx_describe(const char *kind, const char *text)
{
    char buf[512];
    const char *k = kind && *kind ? kind : "message";

    if (text && *text &&
        (!kind || strcmp(kind, "text") == 0 ||
         strcmp(kind, "interactive") == 0))
        return strdup(text);
    if (text && *text) {
        int cut = (int)strnlen(text, 300);

        /* never end inside a UTF-8 sequence */
        if (text[cut] != '\0')
            while (cut > 0 && ((unsigned char)text[cut] & 0xC0) == 0x80)
                cut--;
        snprintf(buf, sizeof(buf),
                 "[The user sent %s %s with the caption: %.*s]",
                 strchr("aeiou", k[0]) ? "an" : "a", k, cut, text);
    } else
        snprintf(buf, sizeof(buf),
                 "[The user sent %s %s without text. You cannot see it; say "
                 "what you received and ask what they need.]",
                 strchr("aeiou", k[0]) ? "an" : "a", k);
    return strdup(buf);
}

static void
msg_free(struct inf_llm_message *m)
{
    free((char *)(uintptr_t)m->content);
}

void
inf_ctx_messages_free(struct inf_llm_message *m, size_t n)
{
    size_t i;

    for (i = 0; m && i < n; i++)
        msg_free(&m[i]);
    free(m);
}

static char *
to_json(const struct inf_llm_message *m, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    char *s;
    size_t i;

    for (i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "role", m[i].role);
        cJSON_AddStringToObject(o, "content", m[i].content);
        cJSON_AddItemToArray(a, o);
    }
    s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

enum core_status
inf_ctx_build(const struct inf_ctx_input *in, struct inf_llm_message **msgs,
              size_t *n, char **json)
{
    struct inf_llm_message *m;
    size_t total = (size_t)in->nhistory + (size_t)in->npending + 1, k = 0;
    int budget = in->budget_tokens, keep = 0, i;

    *msgs = NULL;
    *n = 0;
    *json = NULL;
    m = calloc(total, sizeof(*m));
    if (!m)
        return CORE_ERR_NOMEM;
    m[k].role = "system";
    m[k++].content = strdup(in->system_prompt ? in->system_prompt : "");
    budget -= inf_ctx_estimate_tokens(in->system_prompt);
    /* Budget what is actually sent: a media message's description. */
    for (i = 0; i < in->npending; i++) {
        char *d = inf_ctx_describe(in->pending_kind[i], in->pending_text[i]);

        budget -= inf_ctx_estimate_tokens(d ? d : in->pending_text[i]);
        free(d);
    }
    /* Newest history first until the budget is spent. */
    while (keep < in->nhistory &&
           budget - inf_ctx_estimate_tokens(in->history[keep].content) >= 0) {
        budget -= inf_ctx_estimate_tokens(in->history[keep].content);
        keep++;
    }
    for (i = keep - 1; i >= 0; i--) {
        m[k].role = strcmp(in->history[i].role, "assistant") == 0 ? "assistant"
                                                                  : "user";
        m[k++].content = strdup(in->history[i].content);
    }
    for (i = 0; i < in->npending; i++) {
        m[k].role = "user";
        m[k++].content =
            inf_ctx_describe(in->pending_kind[i], in->pending_text[i]);
    }
    for (i = 0; i < (int)k; i++) {
        if (!m[i].content) {
            inf_ctx_messages_free(m, k);
            return CORE_ERR_NOMEM;
        }
    }
    *json = to_json(m, k);
    if (!*json) {
        inf_ctx_messages_free(m, k);
        return CORE_ERR_NOMEM;
    }
    *msgs = m;
    *n = k;
    return CORE_OK;
}
