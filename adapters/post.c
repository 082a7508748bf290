/*
 * HTTP POSTs to a platform's send API, described apart from being made
 * (struct adp_post): an adapter builds them without a CURL handle (the
 * read receipt's, read_posts), and made on the caller's easy handle
 * (adp_post_perform; adp_meta_post for the sends). Stateless: everything
 * lives in the caller's adp_post and adp_post_answer.
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

#define POST_RESP_MAX_BYTES     ((size_t)64 * 1024)
#define POST_CONNECT_TIMEOUT_MS 5000L
#define POST_TIMEOUT_MS         15000L

static size_t
post_write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct adp_post_answer *a = ud;
    size_t n = size * nmemb;

    if (!a->truncated && core_buf_add(&a->body, data, n) != CORE_OK)
        a->truncated = true;
    return n; /* keep reading (bounded by the timeout) to get the status */
}

static size_t
post_header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct adp_post_answer *a = ud;
    size_t n = size * nmemb;
    char line[128];

    if (n > 12 && n < sizeof(line) &&
        strncasecmp(data, "retry-after:", 12) == 0) {
        memcpy(line, data + 12, n - 12);
        line[n - 12] = '\0';
        a->retry_after_ms = adp_meta_retry_after_ms(line, time(NULL));
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

CURLcode
adp_post_perform(CURL *curl, const struct adp_post *p,
                 struct adp_post_answer *a)
{
    struct curl_slist *headers;
    CURLcode rc;

    memset(a, 0, sizeof(*a));
    core_buf_init(&a->body, POST_RESP_MAX_BYTES);
    a->retry_after_ms = -1;
    if (!curl || !p->body)
        return CURLE_BAD_FUNCTION_ARGUMENT;
    headers = post_headers(p->auth);
    if (!headers)
        return CURLE_OUT_OF_MEMORY;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, p->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, p->body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(p->body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, post_write_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, post_header_cb);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, POST_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, POST_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "parley");
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a->http);
    /* Leave no pointer to p, a or the headers in the caller's handle. */
    curl_easy_reset(curl);
    curl_slist_free_all(headers);
    return rc;
}

void
adp_post_answer_done(struct adp_post_answer *a)
{
    core_buf_done(&a->body);
}
