#include "base/result.h"

#include <catch2/catch.hpp>
#include <string>

using namespace sevemu;

enum class E { Bad, Worse };

static Result<int, E> parse(int x)
{
    if (x < 0)
        return make_unexpected(E::Bad);
    return x * 2;
}

static Result<std::string, E> twice(int x)
{
    int v = TRY(parse(x));
    return std::to_string(v);
}

static Result<void, E> check(int x)
{
    TRY(parse(x));
    return {};
}

TEST_CASE("Result carries a value or an error and TRY propagates", "[base]")
{
    auto ok = twice(21);
    REQUIRE(ok.has_value());
    CHECK(*ok == "42");
    auto bad = twice(-1);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error() == E::Bad);
    CHECK(check(1).has_value());
    CHECK(check(-1).error() == E::Bad);
    CHECK(parse(-5).value_or(7) == 7);
}
