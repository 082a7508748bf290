/*
 * HTTP POSTs to a platform's send API, described apart from being made
 * (struct adp_post): an adapter builds them without a CURL handle (the
 * read receipt's, read_posts), and they run on any easy handle: blocking
 * (adp_post_perform, adp_meta_post), or between adp_post_begin and
 * adp_post_end around a transfer the caller drives.
 * Stateless: everything lives in the caller's adp_post and adp_post_xfer.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

enum core_status
adp_post_make(struct adp_post *p, const char *url, const char *token,
              const cJSON *body)
{
    size_t alen;
    int n;

    memset(p, 0, sizeof(*p));
    if (!url || !token || !token[0] || !body)
        return CORE_ERR_CONFIG;
    n = snprintf(p->url, sizeof(p->url), "%s", url);
    if (n < 0 || (size_t)n >= sizeof(p->url))
        return CORE_ERR_CONFIG;
    alen = strlen(token) + sizeof("Authorization: Bearer ");
    p->auth = malloc(alen);
    p->body = cJSON_PrintUnformatted(body);
    if (!p->auth || !p->body) {
        adp_post_done(p);
        return CORE_ERR_NOMEM;
    }
    snprintf(p->auth, alen, "Authorization: Bearer %s", token);
    return CORE_OK;
}

void
adp_post_done(struct adp_post *p)
{
    if (p->auth) {
        OPENSSL_cleanse(p->auth, strlen(p->auth));
        free(p->auth);
    }
    cJSON_free(p->body);
    p->auth = p->body = NULL;
}

static size_t
post_write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct adp_post_xfer *x = ud;
    size_t n = size * nmemb;

    if (!x->truncated && core_buf_add(&x->body, data, n) != CORE_OK)
        x->truncated = true;
    return n; /* keep reading (bounded by the timeout) to get the status */
}

static size_t
post_header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct adp_post_xfer *x = ud;
    size_t n = size * nmemb;
    char line[128];

    if (n > 12 && n < sizeof(line) &&
        strncasecmp(data, "retry-after:", 12) == 0) {
        memcpy(line, data + 12, n - 12);
        line[n - 12] = '\0';
        x->retry_after_ms = adp_meta_retry_after_ms(line, time(NULL));
    }
    return n;
}

static struct curl_slist *
post_headers(const char *auth)
{
    const char *lines[] = { "Content-Type: application/json", "Expect:", auth };
    struct curl_slist *list = NULL, *h;
    size_t i, n = auth ? 3 : 2;

    for (i = 0; i < n; i++) {
        h = curl_slist_append(list, lines[i]);
        if (!h) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = h;
    }
    return list;
}

enum core_status
adp_post_begin(CURL *curl, const struct adp_post *p, struct adp_post_xfer *x)
{
    memset(x, 0, sizeof(*x));
    core_buf_init(&x->body, ADP_POST_RESP_MAX_BYTES);
    x->retry_after_ms = -1;
    if (!curl || !p->body)
        return CORE_ERR_CONFIG;
    x->headers = post_headers(p->auth);
    if (!x->headers)
        return CORE_ERR_NOMEM;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, p->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, p->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(p->body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, post_write_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, post_header_cb);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     ADP_POST_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, ADP_POST_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "parley");
    return CORE_OK;
}

void
adp_post_end(CURL *curl, struct adp_post_xfer *x)
{
    /* Leave no pointer to the caller's post, x or headers in the handle. */
    if (curl)
        curl_easy_reset(curl);
    curl_slist_free_all(x->headers);
    x->headers = NULL;
}

void
adp_post_xfer_done(struct adp_post_xfer *x)
{
    core_buf_done(&x->body);
}

long
adp_post_perform(CURL *curl, const struct adp_post *p)
{
    struct adp_post_xfer x;
    long http = 0;

    if (adp_post_begin(curl, p, &x) == CORE_OK &&
        curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
    adp_post_end(curl, &x);
    adp_post_xfer_done(&x);
    return http;
}
