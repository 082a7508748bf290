/*
 * Unit tests for analytics/interest: IAB 3.1 categories and intents on
 * English, Spanish and Portuguese messages, sensitive-category handling,
 * accent/plural folding, phrase matching, lexicon integrity, decay,
 * concurrent use and a throughput figure.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analytics/interest.h"

#define OUT_MAX ANA_INTEREST_OUT_MAX

struct result {
    struct ana_interest it[OUT_MAX];
    int n;
    unsigned intents;
};

static void
classify(const char *text, struct result *r)
{
    r->n = ana_interest_classify(text, r->it, OUT_MAX, &r->intents);
    assert_true(r->n >= 0);
}

static const struct ana_interest *
find(const struct result *r, const char *key)
{
    for (int k = 0; k < r->n; k++)
        if (strcmp(r->it[k].key, key) == 0)
            return &r->it[k];
    return NULL;
}

static void
dump(const char *text, const struct result *r)
{
    print_error("text: %s\n  intents=%#x:", text, r->intents);
    for (int k = 0; k < r->n; k++)
        print_error(" %s(%.2f)", r->it[k].key, r->it[k].score);
    print_error("\n");
}

/* ---- the three examples from the brief ---------------------------------- */

static void
test_brief_es_shopping(void **state)
{
    const char *t = "quiero comprar unas zapatillas nike baratas";
    struct result r;
    (void)state;
    classify(t, &r);
    if (find(&r, "iab:473") == NULL || find(&r, "iab:552") == NULL)
        dump(t, &r);
    assert_non_null(find(&r, "iab:473")); /* Shopping */
    assert_non_null(find(&r, "iab:552")); /* Style & Fashion */
    assert_true(r.intents & ANA_INTENT_SHOPPING);
    assert_true(r.intents & ANA_INTENT_PRICE);
    assert_false(r.intents & ANA_INTENT_SENSITIVE);
    assert_string_equal(find(&r, "iab:473")->iab_id, "473");
    assert_string_equal(find(&r, "iab:473")->name, "Shopping");
    assert_int_equal(find(&r, "iab:552")->tier, 1);
}

static void
test_brief_en_health(void **state)
{
    const char *t = "I have diabetes, what should I eat";
    struct result r;
    const struct ana_interest *h;
    (void)state;
    classify(t, &r);
    h = find(&r, "sensitive:health");
    assert_non_null(h);
    assert_true(h->sensitive);
    assert_true(ana_interest_is_sensitive(h));
    assert_string_equal(h->iab_id, "286");
    assert_true(r.intents & ANA_INTENT_SENSITIVE);
    /* nothing a caller may store per user */
    for (int k = 0; k < r.n; k++) {
        if (!r.it[k].sensitive)
            dump(t, &r);
        assert_true(ana_interest_is_sensitive(&r.it[k]));
    }
}

static void
test_brief_pt_travel(void **state)
{
    const char *t = "o que fazer em Lisboa este fim de semana";
    struct result r;
    (void)state;
    classify(t, &r);
    if (find(&r, "iab:653") == NULL || find(&r, "iab:8VZQHL") == NULL)
        dump(t, &r);
    assert_non_null(find(&r, "iab:653"));    /* Travel */
    assert_non_null(find(&r, "iab:8VZQHL")); /* Events */
    assert_non_null(find(&r, "iab:655"));    /* Travel Locations, tier 2 */
    assert_string_equal(find(&r, "iab:655")->parent_id, "653");
    assert_int_equal(find(&r, "iab:655")->tier, 2);
    assert_false(r.intents & ANA_INTENT_SENSITIVE);
}

/* ---- table-driven examples in three languages --------------------------- */

struct ccase {
    const char *text;
    const char *want[4];   /* keys that must be present */
    const char *unwant[3]; /* keys that must be absent */
    unsigned intents;      /* flags that must be set */
    unsigned no_intents;   /* flags that must not be set */
};

static const struct ccase cases[] = {
    /* English */
    { "Where can I buy a cheap laptop for programming?",
      { "iab:473", "iab:596", "iab:599" },
      { NULL },
      ANA_INTENT_SHOPPING | ANA_INTENT_PRICE,
      ANA_INTENT_SENSITIVE },
    { "book a table for two near me tonight",
      { "iab:218", "iab:210" },
      { "iab:42" },
      ANA_INTENT_BOOKING | ANA_INTENT_LOCAL,
      0 },
    { "any good sci-fi novels or a book club in town?",
      { "iab:42" },
      { NULL },
      0,
      ANA_INTENT_BOOKING },
    { "what's the best hotel in Paris for a honeymoon",
      { "iab:653", "iab:655" },
      { NULL },
      0,
      ANA_INTENT_SENSITIVE },
    { "Can I pay with credit card? Do you have free shipping?",
      { "iab:473" },
      { "sensitive:debt" },
      ANA_INTENT_SHOPPING | ANA_INTENT_PRICE,
      ANA_INTENT_SENSITIVE },
    { "I need a credit card to consolidate my debt",
      { "sensitive:debt" },
      { "iab:473" },
      ANA_INTENT_SENSITIVE,
      0 },
    { "my dog needs a vet and dog food",
      { "iab:422", "iab:425" },
      { NULL },
      0,
      0 },
    { "Who won the Champions League match? Messi scored a goal",
      { "iab:483", "iab:533" },
      { NULL },
      0,
      0 },
    { "Recommend a movie on Netflix",
      { "iab:JLBCU7", "iab:324", "iab:640" },
      { NULL },
      0,
      0 },
    { "Oh my god, of course!",
      { NULL },
      { "iab:132", "sensitive:religion" },
      0,
      ANA_INTENT_SENSITIVE },
    { "I want to vote for the socialist party in the election",
      { "sensitive:politics" },
      { NULL },
      ANA_INTENT_SENSITIVE,
      0 },
    { "we go to church every sunday and pray",
      { "sensitive:religion" },
      { NULL },
      ANA_INTENT_SENSITIVE,
      0 },
    { "any gay friendly bars near me?",
      { "sensitive:sexual_orientation" },
      { NULL },
      ANA_INTENT_SENSITIVE | ANA_INTENT_LOCAL,
      0 },
    { "is the union member fee deductible? trade union question",
      { "sensitive:trade_union" },
      { NULL },
      ANA_INTENT_SENSITIVE,
      0 },
    { "I have a criminal record, can I still get a job?",
      { "sensitive:criminal", "iab:123" },
      { NULL },
      ANA_INTENT_SENSITIVE,
      0 },
    { "How much is the iPhone 15 Pro? Is it in stock?",
      { "iab:632" },
      { NULL },
      ANA_INTENT_PRICE | ANA_INTENT_SHOPPING,
      0 },
    { "Is there a pharmacy open now nearby?",
      { NULL },
      { NULL },
      ANA_INTENT_LOCAL,
      0 },
    { "I'd like to schedule an appointment for a haircut",
      { "iab:553" },
      { NULL },
      ANA_INTENT_BOOKING,
      0 },
    /* Spanish */
    { "¿Hay algún gimnasio cerca de mí abierto ahora?",
      { "iab:225", "iab:223" },
      { NULL },
      ANA_INTENT_LOCAL,
      0 },
    { "¿Cuánto cuesta el seguro de coche?",
      { "iab:1", "iab:398" },
      { NULL },
      ANA_INTENT_PRICE,
      0 },
    { "Estoy buscando trabajo como programador, ¿me ayudas con el currículum?",
      { "iab:123", "iab:599" },
      { NULL },
      0,
      ANA_INTENT_SENSITIVE },
    { "quiero reservar un vuelo a Madrid y un hotel",
      { "iab:653", "iab:655" },
      { NULL },
      ANA_INTENT_BOOKING,
      0 },
    { "sin embargo, necesito un abogado",
      { "sensitive:legal" },
      { "sensitive:debt" },
      ANA_INTENT_SENSITIVE,
      0 },
    { "receta de paella para cocinar este domingo",
      { "iab:216", "iab:210" },
      { NULL },
      0,
      0 },
    { "mi abuela tiene cáncer y está en el hospital",
      { "sensitive:health" },
      { NULL },
      ANA_INTENT_SENSITIVE,
      0 },
    { "¿Dónde comprar entradas para el concierto de Shakira?",
      { "iab:338", "iab:8VZQHL", "iab:473" },
      { NULL },
      ANA_INTENT_BOOKING | ANA_INTENT_SHOPPING,
      0 },
    { "busco piso en alquiler en Valencia", { "iab:441" }, { NULL }, 0, 0 },
    { "tengo muchas deudas y no puedo pagar la hipoteca",
      { "sensitive:debt", "iab:441" },
      { NULL },
      ANA_INTENT_SENSITIVE,
      0 },
    { "el partido del Real Madrid en el estadio",
      { "iab:483", "iab:533" },
      { "sensitive:politics" },
      0,
      ANA_INTENT_SENSITIVE },
    { "código de descuento para la tienda online",
      { "iab:474", "iab:473" },
      { NULL },
      ANA_INTENT_PRICE | ANA_INTENT_SHOPPING,
      0 },
    /* Portuguese */
    { "Quero marcar consulta no dentista amanhã",
      { "sensitive:health" },
      { NULL },
      ANA_INTENT_BOOKING | ANA_INTENT_SENSITIVE,
      0 },
    { "qual o preço do telemóvel Samsung? tem em stock?",
      { "iab:632" },
      { NULL },
      ANA_INTENT_PRICE | ANA_INTENT_SHOPPING,
      0 },
    { "vamos ver o jogo do Benfica no estádio",
      { "iab:483", "iab:533" },
      { NULL },
      0,
      0 },
    { "receita de bolo de chocolate", { "iab:210" }, { NULL }, 0, 0 },
    { "meu cachorro precisa de ração",
      { "iab:425", "iab:422" },
      { NULL },
      0,
      0 },
    { "restaurante de sushi perto de mim aberto agora",
      { "iab:218" },
      { NULL },
      ANA_INTENT_LOCAL,
      0 },
    { "procuro emprego, como faço o currículo?",
      { "iab:123" },
      { NULL },
      0,
      0 },
    { "passagens aéreas baratas para o Rio de Janeiro",
      { "iab:653" },
      { NULL },
      ANA_INTENT_PRICE,
      0 },
    { "sou evangélica e vou à igreja",
      { "sensitive:religion" },
      { "iab:453" },
      ANA_INTENT_SENSITIVE,
      0 },
    { "frete grátis na loja online?",
      { "iab:473" },
      { NULL },
      ANA_INTENT_SHOPPING | ANA_INTENT_PRICE,
      0 },
    { "meu deus, que calor",
      { NULL },
      { "sensitive:religion" },
      0,
      ANA_INTENT_SENSITIVE },
    { "ganhei ingressos para o show do Anitta",
      { "iab:8VZQHL", "iab:338" },
      { NULL },
      ANA_INTENT_BOOKING,
      0 },
};

static void
test_examples(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const struct ccase *c = &cases[k];
        struct result r;
        int ok = 1;
        classify(c->text, &r);
        for (size_t w = 0; w < 4 && c->want[w] != NULL; w++)
            ok &= find(&r, c->want[w]) != NULL;
        for (size_t w = 0; w < 3 && c->unwant[w] != NULL; w++)
            ok &= find(&r, c->unwant[w]) == NULL;
        ok &= (r.intents & c->intents) == c->intents;
        ok &= (r.intents & c->no_intents) == 0;
        if (!ok)
            dump(c->text, &r);
        assert_true(ok);
    }
}

/* ---- normalisation --------------------------------------------------------
 */

static void
test_accents_case_plural(void **state)
{
    static const char *const price_forms[] = {
        "preço",         "PREÇO",         "preco",         "Precos",
        "pre\xC3\xA7os", "prec\xCC\xA7o", /* NFD: c + combining cedilla */
        "precio",        "PRECIOS",       "cuánto cuesta", "CUANTO CUESTA",
    };
    static const char *const local_forms[] = {
        "cerca de mí",  "Cerca de mi", "CERCA DE MÍ", "perto de mim",
        "PERTO DE MIM", "near me",     "Near Me",     "near  me",
    };
    struct result r;
    (void)state;
    for (size_t k = 0; k < sizeof(price_forms) / sizeof(price_forms[0]); k++) {
        classify(price_forms[k], &r);
        if (!(r.intents & ANA_INTENT_PRICE))
            dump(price_forms[k], &r);
        assert_true(r.intents & ANA_INTENT_PRICE);
    }
    for (size_t k = 0; k < sizeof(local_forms) / sizeof(local_forms[0]); k++) {
        classify(local_forms[k], &r);
        assert_true(r.intents & ANA_INTENT_LOCAL);
    }
    /* plurals fold: "zapatillas" -> "zapatilla", "cães" is its own row */
    classify("ZAPATILLAS", &r);
    assert_non_null(find(&r, "iab:552"));
    classify("Crèche et garçon: naïve façade", &r); /* no crash, French */
    assert_true(r.n >= 0);
}

static void
test_currency_price(void **state)
{
    static const char *const yes[] = { "it is 50€", "R$ 100 ok", "$20?",
                                       "£ 9",       "¥500",      "costs 3 €" };
    static const char *const no[] = { "50 people", "€ sign", "I have $",
                                      "version 2" };
    struct result r;
    (void)state;
    for (size_t k = 0; k < sizeof(yes) / sizeof(yes[0]); k++) {
        classify(yes[k], &r);
        assert_true(r.intents & ANA_INTENT_PRICE);
    }
    for (size_t k = 0; k < sizeof(no) / sizeof(no[0]); k++) {
        classify(no[k], &r);
        if (r.intents & ANA_INTENT_PRICE)
            dump(no[k], &r);
        assert_false(r.intents & ANA_INTENT_PRICE);
    }
}

static void
test_phrases_longest_match(void **state)
{
    struct result r;
    (void)state;
    /* "book a" is booking; the token "book" is consumed */
    classify("I want to book a hotel in Lisbon", &r);
    assert_true(r.intents & ANA_INTENT_BOOKING);
    assert_null(find(&r, "iab:42"));
    assert_non_null(find(&r, "iab:653"));
    /* "credit card" is one phrase, "card" alone is nothing */
    classify("my credit card was declined", &r);
    assert_non_null(find(&r, "sensitive:debt"));
    classify("nice card", &r);
    assert_int_equal(r.n, 0);
    /* "health insurance" is insurance, not health */
    classify("health insurance quote", &r);
    assert_non_null(find(&r, "iab:398"));
    assert_null(find(&r, "sensitive:health"));
    /* a single weak word is not enough */
    classify("the ring", &r);
    assert_int_equal(r.n, 0);
}

/* ---- API contract -----------------------------------------------------------
 */

static void
test_api_contract(void **state)
{
    struct ana_interest out[2];
    unsigned f = 123;
    const char *t = "hotel flight beach museum pizza church";
    int n;
    (void)state;

    assert_int_equal(ana_interest_classify(NULL, out, 2, &f), -1);
    assert_int_equal(f, 0);
    assert_int_equal(ana_interest_classify("x", NULL, 2, &f), -1);
    assert_int_equal(ana_interest_classify("x", out, -1, &f), -1);
    assert_int_equal(ana_interest_classify("", out, 2, NULL), 0);
    /* maxout 0: nothing written, flags still complete */
    assert_int_equal(ana_interest_classify(t, NULL, 0, &f), 0);
    assert_true(f & ANA_INTENT_SENSITIVE);
    /* truncation keeps the best scores, in order */
    n = ana_interest_classify(t, out, 2, &f);
    assert_int_equal(n, 2);
    assert_true(out[0].score >= out[1].score);
    assert_true(out[0].score > 0.0 && out[0].score < 1.0);
}

static void
test_long_input(void **state)
{
    size_t n = (size_t)3 * ANA_INTEREST_TEXT_MAX;
    char *big = malloc(n + 1);
    struct result r;
    (void)state;
    assert_non_null(big);
    for (size_t k = 0; k < n; k++)
        big[k] = "a hotel "[k % 8];
    big[n] = '\0';
    classify(big, &r);
    assert_non_null(find(&r, "iab:653"));
    /* truncated in the middle of a multibyte sequence: still fine */
    for (size_t k = 0; k + 2 < n; k += 2) {
        big[k] = (char)0xC3;
        big[k + 1] = (char)0xA9;
    }
    classify(big, &r);
    free(big);
}

static void
test_lexicon_integrity(void **state)
{
    struct ana_interest_lexinfo li;
    (void)state;
    assert_int_equal(ana_interest_lexicon_info(&li), 0);
    if (li.conflicts != 0)
        print_error("first conflicting row: %s\n", li.first_conflict);
    assert_int_equal(li.conflicts, 0);
    assert_int_equal(li.rejected, 0);
    assert_true(li.per_lang[0] >= 300); /* en */
    assert_true(li.per_lang[1] >= 300); /* es */
    assert_true(li.per_lang[2] >= 300); /* pt */
    assert_true(li.max_phrase_tokens >= 3);
    print_message("lexicon: %u keys; rows en=%u es=%u pt=%u shared=%u; "
                  "%u harmless duplicates\n",
                  li.entries, li.per_lang[0], li.per_lang[1], li.per_lang[2],
                  li.per_lang[3], li.duplicates);
}

static void
test_categories(void **state)
{
    struct ana_interest all[128];
    int n = ana_interest_categories(all, 128);
    int tier1 = 0, sensitive = 0;
    (void)state;
    assert_true(n > 20 && n <= 128);
    assert_int_equal(ana_interest_categories(NULL, 0), n);
    for (int k = 0; k < n; k++) {
        assert_non_null(all[k].key);
        assert_non_null(all[k].name);
        for (int j = k + 1; j < n; j++)
            assert_string_not_equal(all[k].key, all[j].key);
        if (all[k].sensitive) {
            sensitive++;
            assert_memory_equal(all[k].key, "sensitive:", 10);
        } else {
            assert_memory_equal(all[k].key, "iab:", 4);
            assert_non_null(all[k].iab_id);
            assert_string_equal(all[k].key + 4, all[k].iab_id);
            if (all[k].tier == 2)
                assert_non_null(all[k].parent_id);
            else
                assert_null(all[k].parent_id);
        }
        tier1 += all[k].tier == 1 && !all[k].sensitive;
    }
    assert_true(tier1 >= 25);
    assert_true(sensitive >= 7);
}

static void
test_decay(void **state)
{
    (void)state;
    assert_true(fabs(ana_interest_decay(0.8, 0, 3600) - 0.8) < 1e-12);
    assert_true(fabs(ana_interest_decay(0.8, 3600, 3600) - 0.4) < 1e-12);
    assert_true(fabs(ana_interest_decay(1.0, 7200, 3600) - 0.25) < 1e-12);
    assert_true(fabs(ana_interest_decay(0.5, -10, 3600) - 0.5) < 1e-12);
    assert_true(ana_interest_decay(1.0, 10, 0) == 0.0);
    assert_true(ana_interest_decay(1.0, 10, -1) == 0.0);
    assert_true(ana_interest_decay(NAN, 10, 60) == 0.0);
    assert_true(ana_interest_decay(1.0, 1e12, 60) >= 0.0);
}

/* ---- threads and speed ----------------------------------------------------
 */

static const char *const corpus[] = {
    "quiero comprar unas zapatillas nike baratas",
    "I have diabetes, what should I eat",
    "o que fazer em Lisboa este fim de semana",
    "book a table for two near me tonight",
    "¿Cuánto cuesta el seguro de coche?",
    "Can you recommend a good movie for tonight?",
    "meu cachorro precisa de ração e de um veterinário",
    "Where is my order? It was supposed to arrive yesterday",
    "hola, ¿qué tal? necesito ayuda con mi cuenta",
    "Obrigado pela ajuda, foi perfeito!",
};

#define NCORPUS (sizeof(corpus) / sizeof(corpus[0]))

struct thread_arg {
    unsigned intents[NCORPUS];
    int n[NCORPUS];
    char first_key[NCORPUS][32];
    int failures;
};

/* Round 0 records, later rounds must agree with it. */
static void *
thread_main(void *p)
{
    struct thread_arg *a = p;

    for (int round = 0; round < 200; round++) {
        for (size_t k = 0; k < NCORPUS; k++) {
            struct ana_interest out[OUT_MAX];
            unsigned f;
            int n = ana_interest_classify(corpus[k], out, OUT_MAX, &f);
            const char *key = n > 0 ? out[0].key : "";
            if (round == 0) {
                a->n[k] = n;
                a->intents[k] = f;
                snprintf(a->first_key[k], sizeof(a->first_key[k]), "%s", key);
            } else if (n != a->n[k] || f != a->intents[k] ||
                       strcmp(key, a->first_key[k]) != 0) {
                a->failures++;
            }
        }
    }
    return NULL;
}

/* Six threads race the lazy initialisation, then must all agree. */
static void
test_threads(void **state)
{
    pthread_t th[6];
    static struct thread_arg args[6];
    (void)state;

    memset(args, 0, sizeof(args));
    for (int t = 0; t < 6; t++)
        assert_int_equal(pthread_create(&th[t], NULL, thread_main, &args[t]),
                         0);
    for (int t = 0; t < 6; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < 6; t++) {
        assert_int_equal(args[t].failures, 0);
        for (size_t k = 0; k < NCORPUS; k++) {
            assert_true(args[t].n[k] >= 0);
            assert_int_equal(args[t].n[k], args[0].n[k]);
            assert_int_equal(args[t].intents[k], args[0].intents[k]);
            assert_string_equal(args[t].first_key[k], args[0].first_key[k]);
        }
    }
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_throughput(void **state)
{
    const int n = 100000;
    struct ana_interest out[OUT_MAX];
    double t0, us;
    long hits = 0;
    (void)state;

    ana_interest_classify("warm up", out, OUT_MAX, NULL);
    t0 = now_s();
    for (int k = 0; k < n; k++) {
        unsigned f;
        hits += ana_interest_classify(corpus[(size_t)k % NCORPUS], out, OUT_MAX,
                                      &f);
    }
    us = (now_s() - t0) * 1e6 / n;
    print_message("classify: %d short messages, %.2f us/message "
                  "(%ld categories)\n",
                  n, us, hits);
    /* generous bound that holds under ASan/TSan too */
    assert_true(us < 500.0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads), /* first: races the lazy init */
        cmocka_unit_test(test_brief_es_shopping),
        cmocka_unit_test(test_brief_en_health),
        cmocka_unit_test(test_brief_pt_travel),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_accents_case_plural),
        cmocka_unit_test(test_currency_price),
        cmocka_unit_test(test_phrases_longest_match),
        cmocka_unit_test(test_api_contract),
        cmocka_unit_test(test_long_input),
        cmocka_unit_test(test_lexicon_integrity),
        cmocka_unit_test(test_categories),
        cmocka_unit_test(test_decay),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
