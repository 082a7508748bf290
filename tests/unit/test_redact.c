/*
 * Unit tests for analytics/redact: planted PII in English, Spanish,
 * Portuguese, German and French text, the negatives that must survive
 * (dates, times, prices, references, Luhn-invalid cards, bad IBANs), flags,
 * statistics, UTF-8 safety and the checksum helpers.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/redact.h"

struct rcase {
    const char *in;
    const char *out;
};

static void
check_cases(const struct rcase *cases, size_t n, unsigned flags)
{
    for (size_t k = 0; k < n; k++) {
        char *got = ana_redact(cases[k].in, flags, NULL);
        assert_non_null(got);
        if (strcmp(got, cases[k].out) != 0)
            print_error("case %zu\n  in:   %s\n  want: %s\n  got:  %s\n", k,
                        cases[k].in, cases[k].out, got);
        assert_string_equal(got, cases[k].out);
        free(got);
    }
}

#define CHECK(cases) check_cases((cases), sizeof(cases) / sizeof((cases)[0]), 0)

static void
test_email(void **state)
{
    static const struct rcase cases[] = {
        { "mail me at john.doe@example.com please",
          "mail me at [EMAIL] please" },
        { "<Jane_Roe+news@mail.example.co.uk>", "<[EMAIL]>" },
        { "mailto:info@empresa.com.br", "mailto:[EMAIL]" },
        { "Mi correo es josé.garcía@ejemplo.es.", "Mi correo es [EMAIL]." },
        { "sean.o'brien@example.ie", "[EMAIL]" },
        { "(a@b.io), x@y.org;", "([EMAIL]), [EMAIL];" },
        /* not e-mails */
        { "user@localhost", "user@localhost" },
        { "@handle on twitter", "@handle on twitter" },
        { "meet @ 5pm", "meet @ 5pm" },
        { "foo@bar.c", "foo@bar.c" },
    };
    (void)state;
    CHECK(cases);
}

static void
test_phone(void **state)
{
    static const struct rcase cases[] = {
        /* international */
        { "Ligue para +351 912 345 678 amanhã", "Ligue para [PHONE] amanhã" },
        { "call +1-555-010-0199 now", "call [PHONE] now" },
        { "UK office +44 20 7946 0958.", "UK office [PHONE]." },
        { "+44 (0)20 7946 0958", "[PHONE]" },
        { "Rufen Sie +49 (0)30 12345678 an", "Rufen Sie [PHONE] an" },
        { "Appelez le +33 6 12 34 56 78", "Appelez le [PHONE]" },
        { "WhatsApp: +55 11 98765 4321", "WhatsApp: [PHONE]" },
        { "tel:+34612345678", "tel:[PHONE]" },
        { "Phone:+34-612-345-678;", "Phone:[PHONE];" },
        { "0034 612 345 678", "[PHONE]" },
        { "+1.555.010.0199", "[PHONE]" },
        /* national formats */
        { "(555) 010-0199", "[PHONE]" },
        { "us 555.010.0199", "us [PHONE]" },
        { "1-800-555-0199", "[PHONE]" },
        { "mi móvil es 612 345 678", "mi móvil es [PHONE]" },
        { "fijo 91 123 45 67", "fijo [PHONE]" },
        { "liga 912345678", "liga [PHONE]" },
        { "cel (11) 98765-4321", "cel [PHONE]" },
        { "Tel.: 0171 1234567", "Tel.: [PHONE]" },
        { "030/1234567 oder 030 / 1234567", "[PHONE] oder [PHONE]" },
        { "au 06 12 34 56 78 …", "au [PHONE] …" },
        { "020 7946 0958", "[PHONE]" },
        { "call 5550100199", "call [PHONE]" },
        /* two numbers in a row, a year before a number */
        { "x +1-555-010-0199 1-800-555-0199", "x [PHONE] [PHONE]" },
        { "In 2024 612 345 678", "In 2024 [PHONE]" },
    };
    (void)state;
    CHECK(cases);
}

static void
test_card(void **state)
{
    static const struct rcase cases[] = {
        { "card 4111 1111 1111 1111 exp", "card [CARD] exp" },
        { "5555-5555-5555-4444", "[CARD]" },
        { "amex 3782 822463 10005", "amex [CARD]" },
        { "6011111111111117", "[CARD]" },
        { "jcb 3530111333300000.", "jcb [CARD]." },
        { "visa 4012888888881881, mc 2223003122003222",
          "visa [CARD], mc [CARD]" },
        { "Tarjeta: 4111111111111111 caduca 12/27",
          "Tarjeta: [CARD] caduca 12/27" },
        /* Luhn-invalid: neither a card nor a phone */
        { "4111 1111 1111 1112", "4111 1111 1111 1112" },
        { "ref 1234 5678 9012 3456", "ref 1234 5678 9012 3456" },
        { "1234567890123456", "1234567890123456" },
        /* valid Luhn, implausible issuer (first digit 1, 7, 8, 9, 0) */
        { "7992739871300008 x", "7992739871300008 x" },
        /* longer than 19 digits */
        { "1234 5678 9012 3456 7890", "1234 5678 9012 3456 7890" },
    };
    (void)state;
    CHECK(cases);
}

static void
test_iban(void **state)
{
    static const struct rcase cases[] = {
        { "IBAN DE89 3704 0044 0532 0130 00 bitte", "IBAN [IBAN] bitte" },
        { "GB82 WEST 1234 5698 7654 32", "[IBAN]" },
        { "GB82WEST12345698765432", "[IBAN]" },
        { "ES91 2100 0418 4502 0005 1332.", "[IBAN]." },
        { "pt50 0002 0123 1234 5678 9015 4", "[IBAN]" },
        { "FR14 2004 1010 0505 0001 3M02 606", "[IBAN]" },
        { "BR1800360305000010009795493C1", "[IBAN]" },
        { "NL91ABNA0417164300 en IT60X0542811101000000123456",
          "[IBAN] en [IBAN]" },
        { "BE68539007547034, CH9300762011623852957, AT611904300234573201",
          "[IBAN], [IBAN], [IBAN]" },
        /* bad checksum: kept whole, digits not re-read as card/phone */
        { "nicht DE89 3704 0044 0532 0130 01.",
          "nicht DE89 3704 0044 0532 0130 01." },
        { "ES92 2100 0418 4502 0005 1332", "ES92 2100 0418 4502 0005 1332" },
        /* wrong length for the country, unknown country */
        { "DE89 3704 0044 0532 0130", "DE89 3704 0044 0532 0130" },
        { "ZZ89 3704 0044 0532 0130 00", "ZZ89 3704 0044 0532 0130 00" },
    };
    (void)state;
    CHECK(cases);
}

static void
test_ip(void **state)
{
    static const struct rcase cases[] = {
        { "server 192.168.1.10 down", "server [IP] down" },
        { "net 10.0.0.0/8 and 255.255.255.255", "net [IP] and [IP]" },
        { "ip:8.8.8.8.", "ip:[IP]." },
        { "v6 2001:db8::1 ok", "v6 [IP] ok" },
        { "fe80::1%eth0 and ::1.", "[IP] and [IP]." },
        { "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "[IP]" },
        { "::ffff:192.0.2.1", "[IP]" },
        { "2001:db8::/32", "[IP]" },
        /* not addresses */
        { "256.1.1.1", "256.1.1.1" },
        { "01.02.03.04", "01.02.03.04" },
        { "1.2.3.4.5", "1.2.3.4.5" },
        { "v1.2.3.4", "v1.2.3.4" },
        { "12:30:45", "12:30:45" },
        { "00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e" },
        { "std::vector<int>", "std::vector<int>" },
        /* documented policy: a bare dotted quad with valid octets is an
         * address, even if it was meant as a version number */
        { "version 1.2.3.4", "version [IP]" },
    };
    (void)state;
    CHECK(cases);
}

static void
test_credentials(void **state)
{
    static const struct rcase cases[] = {
        { "https://admin:s3cret@example.com/path",
          "https://[CREDENTIALS]@example.com/path" },
        { "postgres://app:pw@10.0.0.5:5432/db",
          "postgres://[CREDENTIALS]@[IP]:5432/db" },
        { "ftp://anonymous@ftp.example.org",
          "ftp://[CREDENTIALS]@ftp.example.org" },
        { "https://example.com/user@home", "https://example.com/user@home" },
        { "https://example.com/?q=a@b", "https://example.com/?q=a@b" },
    };
    (void)state;
    CHECK(cases);
}

static void
test_negatives(void **state)
{
    static const struct rcase cases[] = {
        { "Date 2026-11-26 at 14:30", "Date 2026-11-26 at 14:30" },
        { "el 26/11/2026, on 11/26/2026, am 26.11.2026",
          "el 26/11/2026, on 11/26/2026, am 26.11.2026" },
        { "2026-11-26 14:30:00", "2026-11-26 14:30:00" },
        { "price 1.299,00 € or R$ 1.299.999,00 or $1,299.99",
          "price 1.299,00 € or R$ 1.299.999,00 or $1,299.99" },
        { "EUR 1.299.000 / 1.299.000 EUR / 45 000 000 €",
          "EUR 1.299.000 / 1.299.000 EUR / 45 000 000 €" },
        { "cuesta 1 299 999 pesos", "cuesta 1 299 999 pesos" },
        { "12,5% y 99.999.999 %", "12,5% y 99.999.999 %" },
        { "order #4111111111 and #12345", "order #4111111111 and #12345" },
        { "pedido nº 123456789", "pedido nº 123456789" },
        { "order number 612345678", "order number 612345678" },
        { "Bestellnummer: 123456789", "Bestellnummer: 123456789" },
        { "Rechnung Nr. 1234567890", "Rechnung Nr. 1234567890" },
        { "encomenda 912345678", "encomenda 912345678" },
        { "between 1999-2005 and 2019 – 2021",
          "between 1999-2005 and 2019 – 2021" },
        { "in 2024 2025 2026", "in 2024 2025 2026" },
        { "population 1 299 999", "population 1 299 999" },
        { "postal 1000-001 Lisboa, zip 94103-1234",
          "postal 1000-001 Lisboa, zip 94103-1234" },
        { "code 12345678, 3 kids, 2026", "code 12345678, 3 kids, 2026" },
        { "ran 123 456 789 km", "ran 123 456 789 km" },
        { "https://example.com/item/123456789",
          "https://example.com/item/123456789" },
        { "ISBN978-3-16-148410-0", "ISBN978-3-16-148410-0" },
    };
    (void)state;
    CHECK(cases);
}

/* Longer mixed texts in five languages, with per-type counts. */
struct mcase {
    const char *in;
    const char *out;
    unsigned email, phone, card, iban, ip, cred;
};

static void
test_mixed_languages(void **state)
{
    static const struct mcase cases[] = {
        { "Hi, I'm Ann (ann.smith@gmail.com, +1 415 555 0132). Charge my "
          "card 4111 1111 1111 1111 and ship by 2026-12-01.",
          "Hi, I'm Ann ([EMAIL], [PHONE]). Charge my card [CARD] and ship by "
          "2026-12-01.",
          1, 1, 1, 0, 0, 0 },
        { "Hola, soy María. Mi móvil es 612 34 56 78 y mi cuenta "
          "ES91 2100 0418 4502 0005 1332. El pedido nº 98765432 costó "
          "1.299,00 €.",
          "Hola, soy María. Mi móvil es [PHONE] y mi cuenta [IBAN]. El "
          "pedido nº 98765432 costó 1.299,00 €.",
          0, 1, 0, 1, 0, 0 },
        { "Olá! O meu e-mail é joão_silva@empresa.pt e o telemóvel "
          "+351 912 345 678; NIB/IBAN PT50 0002 0123 1234 5678 9015 4. "
          "Encomenda #55123 de 26/11/2026 às 14:30.",
          "Olá! O meu e-mail é [EMAIL] e o telemóvel [PHONE]; NIB/IBAN "
          "[IBAN]. Encomenda #55123 de 26/11/2026 às 14:30.",
          1, 1, 0, 1, 0, 0 },
        { "Sehr geehrte Damen und Herren, meine Nummer: 0171 1234567, "
          "IBAN DE89 3704 0044 0532 0130 00, Betrag 1.234,56 €, Server "
          "10.20.30.40.",
          "Sehr geehrte Damen und Herren, meine Nummer: [PHONE], IBAN [IBAN], "
          "Betrag 1.234,56 €, Server [IP].",
          0, 1, 0, 1, 1, 0 },
        { "Bonjour, écrivez à françois.dupont@exemple.fr ou appelez le "
          "01 23 45 67 89. Carte 5555 5555 5555 4444, IBAN "
          "FR14 2004 1010 0505 0001 3M02 606.",
          "Bonjour, écrivez à [EMAIL] ou appelez le [PHONE]. Carte [CARD], "
          "IBAN [IBAN].",
          1, 1, 1, 1, 0, 0 },
        { "debug: https://bot:hunter2@api.example.com from fe80::1 and "
          "+44 20 7946 0958 / admin@example.com",
          "debug: https://[CREDENTIALS]@api.example.com from [IP] and "
          "[PHONE] / [EMAIL]",
          1, 1, 0, 0, 1, 1 },
    };
    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct ana_redact_stats st;
        char *got = ana_redact(cases[k].in, ANA_REDACT_ALL, &st);
        assert_non_null(got);
        if (strcmp(got, cases[k].out) != 0)
            print_error("case %zu got: %s\n", k, got);
        assert_string_equal(got, cases[k].out);
        assert_int_equal(st.email, cases[k].email);
        assert_int_equal(st.phone, cases[k].phone);
        assert_int_equal(st.card, cases[k].card);
        assert_int_equal(st.iban, cases[k].iban);
        assert_int_equal(st.ip, cases[k].ip);
        assert_int_equal(st.credentials, cases[k].cred);
        assert_int_equal(st.total, cases[k].email + cases[k].phone +
                                       cases[k].card + cases[k].iban +
                                       cases[k].ip + cases[k].cred);
        free(got);
    }
}

static void
test_flags(void **state)
{
    const char *in = "a@b.com 4111 1111 1111 1111 +351 912 345 678 "
                     "DE89 3704 0044 0532 0130 00 10.0.0.1";
    struct ana_redact_stats st;
    char *got;
    (void)state;

    /* only phones: the card must not be taken for a phone */
    got = ana_redact(in, ANA_REDACT_PHONE, &st);
    assert_string_equal(got, "a@b.com 4111 1111 1111 1111 [PHONE] "
                             "DE89 3704 0044 0532 0130 00 10.0.0.1");
    assert_int_equal(st.phone, 1);
    assert_int_equal(st.total, 1);
    free(got);

    got = ana_redact(in, ANA_REDACT_CARD | ANA_REDACT_IBAN, &st);
    assert_string_equal(got, "a@b.com [CARD] +351 912 345 678 [IBAN] "
                             "10.0.0.1");
    assert_int_equal(st.total, 2);
    free(got);

    /* 0 means everything */
    got = ana_redact(in, 0, &st);
    assert_string_equal(got, "[EMAIL] [CARD] [PHONE] [IBAN] [IP]");
    assert_int_equal(st.total, 5);
    free(got);
}

static void
test_null_empty_plain(void **state)
{
    struct ana_redact_stats st;
    const char *plain =
        "Nada que ver aquí: ¿qué tal? 日本語テキスト 🙂 ok";
    char *got;
    (void)state;

    assert_null(ana_redact(NULL, 0, &st));
    assert_int_equal(st.total, 0);
    got = ana_redact("", 0, NULL);
    assert_string_equal(got, "");
    free(got);
    got = ana_redact(plain, 0, &st);
    assert_string_equal(got, plain);
    assert_int_equal(st.total, 0);
    free(got);
}

/* Minimal UTF-8 validity check for the output. */
static int
utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        size_t n;
        if (*p < 0x80)
            n = 1;
        else if ((*p & 0xE0) == 0xC0)
            n = 2;
        else if ((*p & 0xF0) == 0xE0)
            n = 3;
        else if ((*p & 0xF8) == 0xF0)
            n = 4;
        else
            return 0;
        for (size_t k = 1; k < n; k++)
            if ((p[k] & 0xC0) != 0x80)
                return 0;
        p += n;
    }
    return 1;
}

static void
test_utf8_preserved(void **state)
{
    static const char *const texts[] = {
        "josé@ejemplo.es→ «612 345 678»",
        "电话：+86 138 0013 8000，邮箱 wang@example.cn。",
        "☎ 030 1234567 ☎ ❤️ 4111-1111-1111-1111 ✅",
        "Ñandú ÿ ß 192.168.0.1 ẞ",
    };
    (void)state;
    for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
        struct ana_redact_stats st;
        char *got = ana_redact(texts[k], 0, &st);
        assert_non_null(got);
        assert_true(utf8_valid(got));
        assert_true(st.total >= 1);
        free(got);
    }
}

/* Pseudo-random bytes and digit soup: no crash, no overrun, every
 * placeholder well-formed (run under ASan/UBSan). */
static void
test_random_input(void **state)
{
    static const char alphabet[] = "0123456789 +-.()/:@#,€a\xC3\xA9xZ";
    uint32_t x = 2463534242u;
    unsigned char buf[512];
    (void)state;

    for (int round = 0; round < 3000; round++) {
        size_t n = 1 + (size_t)round % (sizeof(buf) - 1);
        char *got;
        for (size_t k = 0; k < n; k++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[k] = (round % 3 == 0)
                         ? (unsigned char)(1 + x % 255)
                         : (unsigned char)alphabet[x % (sizeof(alphabet) - 1)];
        }
        buf[n] = '\0';
        got = ana_redact((const char *)buf, 0, NULL);
        assert_non_null(got);
        assert_true(strlen(got) <= n * 14);
        free(got);
    }
}

static void
test_checksums(void **state)
{
    (void)state;
    assert_true(ana_luhn_valid("4111 1111 1111 1111", 19));
    assert_true(ana_luhn_valid("79927398713", 11));
    assert_false(ana_luhn_valid("79927398710", 11));
    assert_false(ana_luhn_valid("4111111111111112", 16));
    assert_false(ana_luhn_valid("0", 1));
    assert_false(ana_luhn_valid(NULL, 0));
    assert_true(ana_iban_valid("DE89 3704 0044 0532 0130 00", 27));
    assert_true(ana_iban_valid("gb82west12345698765432", 22));
    assert_false(ana_iban_valid("DE89 3704 0044 0532 0130 01", 27));
    assert_false(ana_iban_valid("DE89370400440532013", 19));
    assert_false(ana_iban_valid("XX89370400440532013000", 22));
    assert_false(ana_iban_valid("DE89-3704", 9));
    assert_false(ana_iban_valid(NULL, 0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_phone),
        cmocka_unit_test(test_card),
        cmocka_unit_test(test_iban),
        cmocka_unit_test(test_ip),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_negatives),
        cmocka_unit_test(test_mixed_languages),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_null_empty_plain),
        cmocka_unit_test(test_utf8_preserved),
        cmocka_unit_test(test_random_input),
        cmocka_unit_test(test_checksums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
