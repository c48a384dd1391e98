// sevemu — QMP's JSON wire reader, built to answer malformed and hostile input exactly as QEMU 7.2
// does: a lexer (QEMU qobject/json-lexer.c), a streamer that cuts the byte stream into JSON texts
// and enforces the size, token-count and nesting limits (qobject/json-streamer.c), and a parser
// (qobject/json-parser.c). Facts follow those files; the code is sevemu's own.
//
// Nothing here recurses on the input: the parser keeps an explicit stack, bounded by the
// streamer's nesting limit, so a text nested 100,000 deep is refused, never a stack overflow.
// This header is included only by the QMP library and its tests (nlohmann's full header).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu::qmp {

// QEMU qobject/json-streamer.c: MAX_TOKEN_SIZE (64 MiB, per token and per text), MAX_TOKEN_COUNT
// (2 Mi tokens per text), MAX_NESTING (1024 open brackets and braces).
inline constexpr size_t kJsonMaxTokenSize = size_t(64) << 20;
inline constexpr size_t kJsonMaxTokenCount = size_t(2) << 20;
inline constexpr int kJsonMaxNesting = 1 << 10;

// One complete JSON text from the stream: a value, or QEMU's error text for it.
struct JsonMessage {
    std::optional<nlohmann::json> value;
    // When value is an object: its member names in insertion order (QEMU's dispatcher looks at
    // members in its QDict's order, which depends on it; see qmp.cpp).
    std::vector<std::string> top_keys;
    std::string error; // set when !value: "JSON parse error, ..." or a limit's text
};

enum class JsonToken : uint8_t { LCurly, RCurly, LSquare, RSquare, Colon, Comma, Integer, Float, Keyword, String };

// The parser of one text, fed token by token (QEMU parses the whole token list at the end; the
// first error it reports is the first one met in token order, which is what this keeps).
class JsonParser {
public:
    void push(JsonToken type, std::string_view text);
    // The text is complete (or cut by the streamer): its value or error.
    JsonMessage finish();
    void reset();

private:
    enum class State : uint8_t { ArrOpen, ArrAfterValue, ArrNeedValue, ObjOpen, ObjKey, ObjColon, ObjValue, ObjAfterPair };
    struct Frame {
        nlohmann::json value;
        State state;
        std::string key;
    };
    void start_value(JsonToken type, std::string_view text);
    void complete(nlohmann::json v);
    void close_frame();
    void after_member(JsonToken type, JsonToken closer, State next, char const* error);
    void fail(std::string message);

    std::vector<Frame> m_stack;
    std::optional<nlohmann::json> m_result;
    std::vector<std::string> m_top_keys;
    std::string m_error;
};

// Decodes a JSON_STRING token (quotes included) as QEMU's parse_string() does: standard and
// single-quote escapes, \u with surrogate pairs, modified UTF-8 validation. Returns the UTF-8
// text (U+0000 as a NUL byte), or QEMU's error text without the "JSON parse error, " prefix.
bool json_decode_string(std::string_view token, std::string& out, std::string& error);

// The lexer and streamer together: feed bytes, receive each complete text or error.
class JsonStream {
public:
    using Emit = std::function<void(JsonMessage)>;
    void feed(std::string_view bytes, Emit const& emit);
    void reset();

private:
    enum class Lx : uint8_t { Recovery, DqEscape, Dq, SqEscape, Sq, Zero, ExpDigits, ExpSign, ExpE, Mantissa, MantissaDigits, Digits, Sign, Keyword, Start };
    void feed_char(uint8_t c, Emit const& emit);
    void token(JsonToken type, Emit const& emit);
    void stray(Emit const& emit);
    void error(std::string text, Emit const& emit);

    Lx m_state { Lx::Start };
    std::string m_token;
    // Streamer state (json-streamer.c).
    int64_t m_brace { 0 };
    int64_t m_bracket { 0 };
    size_t m_token_size { 0 };
    size_t m_token_count { 0 };
    JsonParser m_parser;
};

} // namespace sevemu::qmp
