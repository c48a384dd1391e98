#include "emulator/qmp/qmp.h"

#include <chrono>
#include <nlohmann/json.hpp>

namespace sevemu::qmp {

Error generic_error(std::string desc) { return Error { "GenericError", std::move(desc) }; }

void CommandTable::add(std::string name, Handler handler) { m_handlers[std::move(name)] = std::move(handler); }

Handler const* CommandTable::find(std::string_view name) const
{
    auto it = m_handlers.find(name);
    return it == m_handlers.end() ? nullptr : &it->second;
}

std::vector<std::string> CommandTable::names() const
{
    std::vector<std::string> out;
    for (auto const& [n, h] : m_handlers)
        out.push_back(n);
    return out;
}

// Messages as QEMU's qobject input visitor words them.
static Error missing(char const* name) { return generic_error(std::string("Parameter '") + name + "' is missing"); }
static Error wrong_type(char const* name, char const* type)
{
    return generic_error(std::string("Invalid parameter type for '") + name + "', expected: " + type);
}

Result<std::optional<std::string>, Error> arg_opt_string(Json const& args, char const* name)
{
    auto it = args.find(name);
    if (it == args.end())
        return std::optional<std::string> {};
    if (!it->is_string())
        return make_unexpected(wrong_type(name, "string"));
    return std::optional<std::string> { it->get<std::string>() };
}

Result<std::string, Error> arg_string(Json const& args, char const* name)
{
    auto v = TRY(arg_opt_string(args, name));
    if (!v)
        return make_unexpected(missing(name));
    return *v;
}

Result<std::optional<int64_t>, Error> arg_opt_int(Json const& args, char const* name)
{
    auto it = args.find(name);
    if (it == args.end())
        return std::optional<int64_t> {};
    if (it->is_number_integer())
        return std::optional<int64_t> { it->get<int64_t>() };
    return make_unexpected(wrong_type(name, "integer"));
}

Result<int64_t, Error> arg_int(Json const& args, char const* name)
{
    auto v = TRY(arg_opt_int(args, name));
    if (!v)
        return make_unexpected(missing(name));
    return *v;
}

Result<std::optional<bool>, Error> arg_opt_bool(Json const& args, char const* name)
{
    auto it = args.find(name);
    if (it == args.end())
        return std::optional<bool> {};
    if (!it->is_boolean())
        return make_unexpected(wrong_type(name, "boolean"));
    return std::optional<bool> { it->get<bool>() };
}

Session::Session(CommandTable const& commands) : m_commands(commands) {}
Session::~Session() = default;

std::string Session::greeting() const
{
    Json g = { { "QMP",
        { { "version", { { "qemu", { { "micro", 0 }, { "minor", 1 }, { "major", 0 } } }, { "package", "sevemu" } } },
            { "capabilities", Json::array() } } } };
    return g.dump() + "\r\n";
}

std::string Session::reply_error(Error const& e, Json const* id) const
{
    Json r = { { "error", { { "class", e.error_class }, { "desc", e.desc } } } };
    if (id)
        r["id"] = *id;
    return r.dump() + "\r\n";
}

std::string format_event(std::string_view name, Json const& data)
{
    auto now = std::chrono::system_clock::now().time_since_epoch();
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    Json e = { { "event", std::string(name) }, { "timestamp", { { "seconds", us / 1000000 }, { "microseconds", us % 1000000 } } } };
    if (!data.is_null())
        e["data"] = data;
    return e.dump() + "\r\n";
}

// One complete JSON text. Checks follow QEMU's monitor/qmp.c and qapi/qmp-dispatch.c.
std::string Session::handle(std::string_view text)
{
    Json req = Json::parse(text, nullptr, false);
    if (req.is_discarded())
        return reply_error(generic_error("JSON parse error, invalid JSON text"), nullptr);
    if (!req.is_object())
        return reply_error(generic_error("QMP input must be a JSON object"), nullptr);
    Json const* id = req.contains("id") ? &req["id"] : nullptr;
    for (auto const& [key, value] : req.items()) {
        if (key != "execute" && key != "arguments" && key != "id")
            return reply_error(generic_error("QMP input member '" + key + "' is unexpected"), id);
    }
    if (!req.contains("execute"))
        return reply_error(generic_error("QMP input lacks member 'execute'"), id);
    if (!req["execute"].is_string())
        return reply_error(generic_error("QMP input member 'execute' must be a string"), id);
    Json args = Json::object();
    if (req.contains("arguments")) {
        if (!req["arguments"].is_object())
            return reply_error(generic_error("QMP input member 'arguments' must be an object"), id);
        args = req["arguments"];
    }
    std::string name = req["execute"].get<std::string>();

    if (name == "qmp_capabilities") {
        if (m_negotiated)
            return reply_error({ "CommandNotFound", "Capabilities negotiation is already complete, command ignored" }, id);
        if (args.contains("enable")) {
            auto const& en = args["enable"];
            if (!en.is_array())
                return reply_error(wrong_type("enable", "array"), id);
            for (auto const& cap : en)
                return reply_error(generic_error("Capability '" + (cap.is_string() ? cap.get<std::string>() : cap.dump()) + "' not available"), id);
        }
        for (auto const& [key, value] : args.items())
            if (key != "enable")
                return reply_error(generic_error("Parameter '" + key + "' is unexpected"), id);
        m_negotiated = true;
        Json r = { { "return", Json::object() } };
        if (id)
            r["id"] = *id;
        return r.dump() + "\r\n";
    }
    if (!m_negotiated)
        return reply_error({ "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'" }, id);

    Handler const* h = m_commands.find(name);
    if (!h)
        return reply_error({ "CommandNotFound", "The command " + name + " has not been found" }, id);
    auto result = (*h)(args);
    if (!result)
        return reply_error(result.error(), id);
    Json r = { { "return", result->is_null() ? Json::object() : *result } };
    if (id)
        r["id"] = *id;
    if (name == "quit")
        m_close = true;
    return r.dump() + "\r\n";
}

// Splits the byte stream into JSON texts by counting braces and brackets outside strings, as
// QEMU's JSON streamer does; whitespace between texts is skipped. A stray closing bracket or
// an over-long text gives a parse error and resets the splitter, so the session goes on.
std::vector<std::string> Session::feed(std::string_view bytes)
{
    // QEMU caps a JSON text too (json-streamer.c MAX_TOKEN_SIZE); sevemu's commands carry at
    // most a few KiB (SEV blobs are at most 16 KiB). An oversized text is skipped to its end
    // (its nesting and strings still tracked, nothing buffered) and answered with one error, so
    // the requests after it are served normally.
    static constexpr size_t kMaxText = 1 << 20;
    std::vector<std::string> replies;
    auto end_of_text = [&] {
        if (m_skipping)
            replies.push_back(reply_error(generic_error("JSON token size limit exceeded"), nullptr));
        else
            replies.push_back(handle(m_buffer));
        m_buffer.clear();
        m_skipping = false;
    };
    for (char c : bytes) {
        bool space = c == ' ' || c == '\n' || c == '\r' || c == '\t';
        if (m_depth == 0 && !m_in_string && space) {
            // Whitespace ends a bare top-level scalar ("42"), which then gets its error reply.
            if (!m_buffer.empty() || m_skipping)
                end_of_text();
            continue;
        }
        if (!m_skipping)
            m_buffer.push_back(c);
        bool opens_string = false;
        if (m_in_string) {
            if (m_escape)
                m_escape = false;
            else if (c == '\\')
                m_escape = true;
            else if (c == '"')
                m_in_string = false;
        } else if (c == '"') {
            m_in_string = true;
            opens_string = true;
        } else if (c == '{' || c == '[') {
            ++m_depth;
        } else if (c == '}' || c == ']') {
            --m_depth;
        }
        if (m_depth < 0) {
            replies.push_back(reply_error(generic_error("JSON parse error, stray or unbalanced input"), nullptr));
            m_buffer.clear();
            m_depth = 0;
            m_in_string = m_escape = m_skipping = false;
        } else if (!m_skipping && m_buffer.size() > kMaxText) {
            m_buffer.clear();
            m_skipping = true;
        } else if (m_depth == 0 && !m_in_string && (c == '}' || c == ']' || (c == '"' && !opens_string))) {
            end_of_text();
        }
    }
    return replies;
}

Result<Endpoint, std::string> parse_endpoint(std::string_view spec)
{
    Endpoint ep;
    std::string s(spec);
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
        size_t comma = s.find(',', start);
        parts.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
    std::string const& addr = parts[0];
    if (addr.rfind("unix:", 0) == 0) {
        ep.kind = Endpoint::Kind::Unix;
        ep.path = addr.substr(5);
        if (ep.path.empty())
            return make_unexpected(std::string("unix: needs a socket path"));
    } else if (addr.rfind("tcp:", 0) == 0) {
        ep.kind = Endpoint::Kind::Tcp;
        std::string rest = addr.substr(4);
        size_t colon = rest.rfind(':');
        if (colon == std::string::npos)
            return make_unexpected(std::string("tcp: needs HOST:PORT"));
        ep.host = rest.substr(0, colon);
        if (ep.host.empty())
            ep.host = "127.0.0.1";
        std::string port = rest.substr(colon + 1);
        if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535)
            return make_unexpected("invalid port '" + port + "'");
        ep.port = uint16_t(std::stoul(port));
    } else {
        return make_unexpected("unsupported QMP address '" + addr + "' (use unix:PATH or tcp:HOST:PORT)");
    }
    bool server = false;
    for (size_t i = 1; i < parts.size(); ++i) {
        auto const& p = parts[i];
        if (p == "server" || p == "server=on")
            server = true;
        else if (p == "server=off")
            server = false;
        else if (p == "nowait" || p == "wait=off")
            ep.wait = false;
        else if (p == "wait=on" || p == "wait")
            ep.wait = true;
        else
            return make_unexpected("unsupported QMP option '" + p + "'");
    }
    if (!server)
        return make_unexpected(std::string("only server=on is supported: sevemu listens, clients connect"));
    return ep;
}

} // namespace sevemu::qmp
