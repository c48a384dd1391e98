#include "emulator/qmp/qmp_json.h"

#include "base/encoding.h"

#include <cerrno>
#include <cstdlib>

namespace sevemu::qmp {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Strings (QEMU qobject/json-parser.c parse_string, util/unicode.c mod_utf8_codepoint/encode).

namespace {

// util/unicode.c is_valid_codepoint(): Unicode range, no noncharacters, no surrogates.
bool valid_codepoint(int64_t cp)
{
    if (cp < 0 || cp > 0x10FFFF)
        return false;
    if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE)
        return false;
    return !(cp >= 0xD800 && cp <= 0xDFFF);
}

void append_utf8(std::string& out, uint32_t cp)
{
    if (cp < 0x80) {
        out.push_back(char(cp));
    } else if (cp < 0x800) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    }
}

// json-parser.c cvt4hex(): four hex digits at `at`, or -1 (the token's end counts as a non-digit,
// like the C string's terminator).
int64_t four_hex(std::string_view s, size_t at)
{
    int64_t cp = 0;
    for (size_t i = 0; i < 4; ++i) {
        int d = at + i < s.size() ? hex_digit_value(s[at + i]) : -1;
        if (d < 0)
            return -1;
        cp = (cp << 4) | d;
    }
    return cp;
}

// util/unicode.c mod_utf8_codepoint() on at most 6 bytes: the code point and its length, or -1.
// Overlong forms are refused except 0xC0 0x80 (modified UTF-8's U+0000).
int64_t utf8_codepoint(std::string_view s, size_t at, size_t& len)
{
    static constexpr int64_t kMin[5] = { 0x80, 0x800, 0x10000, 0x200000, 0x4000000 };
    uint8_t b = uint8_t(s[at]);
    len = 1;
    if (b < 0x80)
        return b;
    if (b >= 0xFE || (b & 0x40) == 0)
        return -1; // impossible byte, or a continuation byte where a sequence should start
    size_t n = 0;
    uint8_t mask = 0x80;
    for (; b & mask; mask >>= 1)
        ++n;
    int64_t cp = b & (mask - 1);
    for (size_t i = 1; i < n; ++i) {
        uint8_t c = at + i < s.size() ? uint8_t(s[at + i]) : 0;
        if ((c & 0xC0) != 0x80)
            return -1;
        len = i + 1;
        cp = (cp << 6) | (c & 0x3F);
    }
    if (!valid_codepoint(cp) || (cp < kMin[n - 2] && !(cp == 0 && n == 2)))
        return -1;
    return cp;
}

} // namespace

bool json_decode_string(std::string_view tok, std::string& out, std::string& error)
{
    // The lexer guarantees: an opening quote, a matching closing quote at the end, no byte below
    // 0x20 and no 0xFE/0xFF anywhere between (json-lexer.c IN_DQ_STRING/IN_SQ_STRING).
    size_t end = tok.size() - 1;
    out.clear();
    size_t p = 1;
    while (p < end) {
        char c = tok[p];
        if (c == '\\') {
            size_t beg = p++;
            char e = tok[p++];
            switch (e) {
            case '"': out.push_back('"'); break;
            case '\'': out.push_back('\''); break;
            case '\\': out.push_back('\\'); break;
            case '/': out.push_back('/'); break;
            case 'b': out.push_back('\b'); break;
            case 'f': out.push_back('\f'); break;
            case 'n': out.push_back('\n'); break;
            case 'r': out.push_back('\r'); break;
            case 't': out.push_back('\t'); break;
            case 'u': {
                int64_t cp = four_hex(tok, p);
                p += 4;
                // A leading surrogate followed by \u must pair with a trailing one.
                if (cp >= 0xD800 && cp <= 0xDBFF && p + 1 < tok.size() && tok[p] == '\\' && tok[p + 1] == 'u') {
                    cp = 0x10000 + ((cp & 0x3FF) << 10);
                    int64_t trailing = four_hex(tok, p + 2);
                    if (trailing >= 0xDC00 && trailing <= 0xDFFF) {
                        cp |= trailing & 0x3FF;
                        p += 6;
                    } else {
                        cp = -1;
                    }
                }
                if (!valid_codepoint(cp)) {
                    // QEMU prints the escape as "%.*s" of the C string: it stops at the token's end.
                    std::string_view text = tok.substr(beg, std::min(p, tok.size()) - beg);
                    error = std::string(text) + " is not a valid Unicode character";
                    return false;
                }
                append_utf8(out, uint32_t(cp));
                break;
            }
            default:
                error = "invalid escape sequence in string";
                return false;
            }
            continue;
        }
        size_t len = 0;
        int64_t cp = utf8_codepoint(tok, p, len);
        if (cp < 0) {
            error = "invalid UTF-8 sequence in string";
            return false;
        }
        append_utf8(out, uint32_t(cp));
        p += len;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Parser (QEMU qobject/json-parser.c, as a push parser with an explicit stack).

void JsonParser::reset()
{
    m_stack.clear();
    m_result.reset();
    m_top_keys.clear();
    m_error.clear();
}

void JsonParser::fail(std::string message)
{
    // json-parser.c parse_error(): the first error wins.
    if (m_error.empty())
        m_error = "JSON parse error, " + message;
    m_stack.clear();
}

void JsonParser::push(JsonToken type, std::string_view text)
{
    if (!m_error.empty())
        return;
    if (m_result) {
        // Unreachable through JsonStream (it cuts texts at their end); kept total.
        fail("expecting value");
        return;
    }
    if (m_stack.empty()) {
        start_value(type, text);
        return;
    }
    Frame& f = m_stack.back();
    switch (f.state) {
    case State::ArrOpen:
        if (type == JsonToken::RSquare)
            return close_frame();
        start_value(type, text);
        return;
    case State::ArrNeedValue:
    case State::ObjKey:
    case State::ObjValue:
        start_value(type, text);
        return;
    case State::ArrAfterValue:
        return after_member(type, JsonToken::RSquare, State::ArrNeedValue, "expected separator in list");
    case State::ObjOpen:
        if (type == JsonToken::RCurly)
            return close_frame();
        f.state = State::ObjKey;
        start_value(type, text);
        return;
    case State::ObjColon:
        if (type != JsonToken::Colon)
            fail("missing : in object pair");
        else
            f.state = State::ObjValue;
        return;
    case State::ObjAfterPair:
        return after_member(type, JsonToken::RCurly, State::ObjKey, "expected separator in dict");
    }
}

// The innermost list or object is complete: it becomes a value of the frame around it.
void JsonParser::close_frame()
{
    Json v = std::move(m_stack.back().value);
    m_stack.pop_back();
    complete(std::move(v));
}

// After a list element or an object member: the closing bracket, a comma, or an error.
void JsonParser::after_member(JsonToken type, JsonToken closer, State next, char const* error)
{
    if (type == closer)
        close_frame();
    else if (type == JsonToken::Comma)
        m_stack.back().state = next;
    else
        fail(error);
}

void JsonParser::start_value(JsonToken type, std::string_view text)
{
    switch (type) {
    case JsonToken::LCurly:
        m_stack.push_back(Frame { Json::object(), State::ObjOpen, {} });
        return;
    case JsonToken::LSquare:
        m_stack.push_back(Frame { Json::array(), State::ArrOpen, {} });
        return;
    case JsonToken::String: {
        std::string s, err;
        if (!json_decode_string(text, s, err))
            return fail(err);
        return complete(Json(std::move(s)));
    }
    case JsonToken::Integer: {
        // As a signed 64-bit integer if it fits, else unsigned, else a double (parse_literal).
        std::string t(text);
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(t.c_str(), &end, 10);
        if (errno == 0)
            return complete(Json(int64_t(v)));
        if (t[0] != '-') {
            errno = 0;
            unsigned long long u = std::strtoull(t.c_str(), &end, 10);
            if (errno == 0)
                return complete(Json(uint64_t(u)));
        }
        return complete(Json(std::strtod(t.c_str(), nullptr)));
    }
    case JsonToken::Float:
        return complete(Json(std::strtod(std::string(text).c_str(), nullptr)));
    case JsonToken::Keyword:
        if (text == "true")
            return complete(Json(true));
        if (text == "false")
            return complete(Json(false));
        if (text == "null")
            return complete(Json(nullptr));
        return fail("invalid keyword '" + std::string(text) + "'");
    default:
        return fail("expecting value");
    }
}

void JsonParser::complete(Json v)
{
    if (m_stack.empty()) {
        m_result = std::move(v);
        return;
    }
    Frame& f = m_stack.back();
    switch (f.state) {
    case State::ArrOpen:
    case State::ArrNeedValue:
        f.value.push_back(std::move(v));
        f.state = State::ArrAfterValue;
        return;
    case State::ObjKey:
        if (!v.is_string())
            return fail("key is not a string in object");
        f.key = std::move(v.get_ref<std::string&>());
        f.state = State::ObjColon;
        return;
    case State::ObjValue:
        // A repeated member is an error, checked once the value has been parsed (parse_pair).
        if (!f.value.emplace(f.key, std::move(v)).second)
            return fail("duplicate key");
        if (m_stack.size() == 1)
            m_top_keys.push_back(f.key);
        f.state = State::ObjAfterPair;
        return;
    default:
        // complete() follows start_value() only in a state that expects a value.
        return fail("expecting value");
    }
}

JsonMessage JsonParser::finish()
{
    JsonMessage m;
    if (!m_error.empty())
        m.error = m_error;
    else if (!m_result)
        m.error = "JSON parse error, premature EOI";
    else {
        m.value = std::move(m_result);
        m.top_keys = std::move(m_top_keys);
    }
    reset();
    return m;
}

// ---------------------------------------------------------------------------------------------
// Lexer and streamer (QEMU qobject/json-lexer.c, qobject/json-streamer.c).

void JsonStream::reset()
{
    m_state = Lx::Start;
    m_token.clear();
    m_brace = m_bracket = 0;
    m_token_size = m_token_count = 0;
    m_parser.reset();
}

void JsonStream::error(std::string text, Emit const& emit)
{
    // json-streamer.c out_emit: drop the text so far, start afresh.
    m_brace = m_bracket = 0;
    m_token_size = m_token_count = 0;
    m_parser.reset();
    JsonMessage m;
    m.error = std::move(text);
    emit(std::move(m));
}

void JsonStream::stray(Emit const& emit)
{
    // json-streamer.c: "JSON parse error, stray '%s'" with the lexer's token so far, the bad byte
    // included; "%s" ends at a NUL byte. sevemu shows at most 64 KiB of it (QUIRKS.md).
    static constexpr size_t kMaxEcho = 64 * 1024;
    std::string_view t = m_token;
    t = t.substr(0, t.find('\0'));
    std::string shown(t.substr(0, kMaxEcho));
    // The desc is JSON text: bytes that are not UTF-8 are shown as U+FFFD by the formatter.
    error("JSON parse error, stray '" + shown + "'", emit);
}

void JsonStream::token(JsonToken type, Emit const& emit)
{
    switch (type) {
    case JsonToken::LCurly: ++m_brace; break;
    case JsonToken::RCurly: --m_brace; break;
    case JsonToken::LSquare: ++m_bracket; break;
    case JsonToken::RSquare: --m_bracket; break;
    default: break;
    }
    // "Security consideration": bound the memory per text and the depth a text can force.
    if (m_token_size + m_token.size() + 1 > kJsonMaxTokenSize)
        return error("JSON token size limit exceeded", emit);
    if (m_token_count + 1 > kJsonMaxTokenCount)
        return error("JSON token count limit exceeded", emit);
    if (m_bracket + m_brace > kJsonMaxNesting)
        return error("JSON nesting depth limit exceeded", emit);
    m_token_size += m_token.size();
    ++m_token_count;
    m_parser.push(type, m_token);
    if ((m_brace > 0 || m_bracket > 0) && m_brace >= 0 && m_bracket >= 0)
        return;
    JsonMessage m = m_parser.finish();
    m_brace = m_bracket = 0;
    m_token_size = m_token_count = 0;
    emit(std::move(m));
}

void JsonStream::feed(std::string_view bytes, Emit const& emit)
{
    for (char c : bytes)
        feed_char(uint8_t(c), emit);
}

void JsonStream::feed_char(uint8_t c, Emit const& emit)
{
    // One step of json-lexer.c's table: a next state, a finished token, or an error; a token that
    // ends at a byte not its own ("lookahead") leaves the byte for the next step.
    enum class Kind { State, Token, Error };
    struct Step {
        Kind kind;
        Lx state {};
        JsonToken token {};
        bool lookahead { false };
    };
    auto to = [](Lx s) { return Step { Kind::State, s, {}, false }; };
    auto ends = [](JsonToken t) { return Step { Kind::Token, {}, t, true }; };
    auto tok = [](JsonToken t) { return Step { Kind::Token, {}, t, false }; };
    Step const bad { Kind::Error };
    bool digit = c >= '0' && c <= '9';
    bool in_string = c >= 0x20 && c <= 0xFD;

    auto next = [&](Lx s) -> Step {
        switch (s) {
        case Lx::Recovery:
            // Skip to a structural character, or a control character other than tab, or 0xFE/0xFF:
            // the places a client can resynchronise (docs/interop/qmp-spec.txt).
            if ((c < 0x20 && c != '\t') || c >= 0xFE || c == '[' || c == ']' || c == '{' || c == '}' || c == ',' || c == ':')
                return Step { Kind::State, Lx::Start, {}, true };
            return to(Lx::Recovery);
        case Lx::DqEscape:
            return in_string ? to(Lx::Dq) : bad;
        case Lx::Dq:
            if (!in_string)
                return bad;
            return c == '\\' ? to(Lx::DqEscape) : c == '"' ? tok(JsonToken::String) : to(Lx::Dq);
        case Lx::SqEscape:
            return in_string ? to(Lx::Sq) : bad;
        case Lx::Sq:
            if (!in_string)
                return bad;
            return c == '\\' ? to(Lx::SqEscape) : c == '\'' ? tok(JsonToken::String) : to(Lx::Sq);
        case Lx::Zero:
            return digit ? bad : c == '.' ? to(Lx::Mantissa) : ends(JsonToken::Integer);
        case Lx::ExpDigits:
            return digit ? to(Lx::ExpDigits) : ends(JsonToken::Float);
        case Lx::ExpSign:
            return digit ? to(Lx::ExpDigits) : bad;
        case Lx::ExpE:
            return (c == '-' || c == '+') ? to(Lx::ExpSign) : digit ? to(Lx::ExpDigits) : bad;
        case Lx::Mantissa:
            return digit ? to(Lx::MantissaDigits) : bad;
        case Lx::MantissaDigits:
            return digit ? to(Lx::MantissaDigits) : (c == 'e' || c == 'E') ? to(Lx::ExpE) : ends(JsonToken::Float);
        case Lx::Digits:
            return digit ? to(Lx::Digits) : (c == 'e' || c == 'E') ? to(Lx::ExpE) : c == '.' ? to(Lx::Mantissa) : ends(JsonToken::Integer);
        case Lx::Sign:
            return c == '0' ? to(Lx::Zero) : digit ? to(Lx::Digits) : bad;
        case Lx::Keyword:
            return (c >= 'a' && c <= 'z') ? to(Lx::Keyword) : ends(JsonToken::Keyword);
        case Lx::Start:
            switch (c) {
            case '"': return to(Lx::Dq);
            case '\'': return to(Lx::Sq);
            case '0': return to(Lx::Zero);
            case '-': return to(Lx::Sign);
            case '{': return tok(JsonToken::LCurly);
            case '}': return tok(JsonToken::RCurly);
            case '[': return tok(JsonToken::LSquare);
            case ']': return tok(JsonToken::RSquare);
            case ',': return tok(JsonToken::Comma);
            case ':': return tok(JsonToken::Colon);
            case ' ': case '\t': case '\r': case '\n': return to(Lx::Start);
            default:
                if (digit)
                    return to(Lx::Digits);
                if (c >= 'a' && c <= 'z')
                    return to(Lx::Keyword);
                return bad; // includes '%': QMP's lexer has no interpolation
            }
        }
        return bad;
    };

    bool consumed = false;
    while (!consumed) {
        Step st = next(m_state);
        consumed = !st.lookahead;
        if (consumed)
            m_token.push_back(char(c));
        switch (st.kind) {
        case Kind::Token:
            token(st.token, emit);
            m_token.clear();
            m_state = Lx::Start;
            break;
        case Kind::Error:
            stray(emit);
            m_token.clear();
            m_state = Lx::Recovery;
            break;
        case Kind::State:
            if (st.state == Lx::Start || st.state == Lx::Recovery)
                m_token.clear();
            m_state = st.state;
            break;
        }
    }
    // json-lexer.c: no single token may grow past MAX_TOKEN_SIZE; the streamer refuses it.
    if (m_token.size() > kJsonMaxTokenSize) {
        error("JSON token size limit exceeded", emit);
        m_token.clear();
        m_state = Lx::Start;
    }
}

} // namespace sevemu::qmp
