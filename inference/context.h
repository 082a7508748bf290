/*
 * Conversation context for the LLM: the system prompt, then the most recent
 * turns that fit a token budget, then the pending user messages.
 * Tokens are estimated as (bytes + 3) / 4 + 4 per message: close to BPE
 * counts for English, conservative for most other scripts.
 */
#ifndef INFERENCE_CONTEXT_H
#define INFERENCE_CONTEXT_H

#include <stddef.h>

#include "core/status.h"
#include "inference/llm.h"

#define INF_CTX_MAX_PENDING 20

struct inf_ctx_turn {
    char *role; /* "user" or "assistant" */
    char *content;
};

struct inf_ctx_input {
    const char *system_prompt;
    int budget_tokens;
    const struct inf_ctx_turn *history; /* newest first */
    int nhistory;
    const char *pending_kind[INF_CTX_MAX_PENDING]; /* messages.kind */
    const char *pending_text[INF_CTX_MAX_PENDING]; /* may be NULL */
    int npending;
};

int inf_ctx_estimate_tokens(const char *s);
void inf_ctx_turns_free(struct inf_ctx_turn *t, int n);
/* Build the messages array (caller frees with inf_ctx_messages_free) and
 * its JSON (malloc'd) as stored in responses.request_messages. */
enum core_status inf_ctx_build(const struct inf_ctx_input *in,
                               struct inf_llm_message **msgs, size_t *n,
                               char **json);
void inf_ctx_messages_free(struct inf_llm_message *m, size_t n);
/* What a message without text says to the model, e.g. for an image. */
char *inf_ctx_describe(const char *kind, const char *text);

#endif
