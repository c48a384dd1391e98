#include "base/encoding.h"

#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <random>

using namespace sevemu;

TEST_CASE("hex round trip and rejection", "[base]")
{
    Bytes b { 0x00, 0x01, 0xab, 0xff };
    CHECK(to_hex(b) == "0001abff");
    CHECK(from_hex("0001ABff") == b);
    CHECK(from_hex("00 01\nab ff") == b);
    CHECK_FALSE(from_hex("abc").has_value());
    CHECK_FALSE(from_hex("zz").has_value());
}

TEST_CASE("base64 matches OpenSSL's encoder on random data", "[base]")
{
    std::mt19937 rng(7);
    for (size_t len = 0; len < 200; ++len) {
        Bytes data(len);
        for (auto& b : data)
            b = uint8_t(rng());
        std::string ref((len + 2) / 3 * 4 + 1, '\0');
        int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(ref.data()), data.data(), int(len));
        ref.resize(size_t(n));
        REQUIRE(to_base64(data) == ref);
        REQUIRE(from_base64(ref) == data);
    }
}

TEST_CASE("base64 rejects malformed input", "[base]")
{
    CHECK_FALSE(from_base64("abc").has_value());
    CHECK_FALSE(from_base64("ab$=").has_value());
    CHECK_FALSE(from_base64("a===").has_value());
    CHECK_FALSE(from_base64("ab=c").has_value());
    CHECK(from_base64("aGVs\nbG8=") == Bytes { 'h', 'e', 'l', 'l', 'o' });
}

TEST_CASE("little-endian helpers", "[base]")
{
    uint8_t buf[8] {};
    store_le(buf, 0x1122334455667788ull, 8);
    CHECK(buf[0] == 0x88);
    CHECK(buf[7] == 0x11);
    CHECK(load_le(buf, 4) == 0x55667788u);
}
