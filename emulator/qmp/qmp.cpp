#include "emulator/qmp/qmp.h"

#include "emulator/qmp/qmp_json.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <nlohmann/json.hpp>

namespace sevemu::qmp {

Error generic_error(std::string desc) { return Error { "GenericError", std::move(desc) }; }

void CommandTable::add(std::string name, Handler handler) { add(std::move(name), {}, std::move(handler)); }

void CommandTable::add(std::string name, std::vector<ArgSpec> args, Handler handler)
{
    m_commands[std::move(name)] = Command { std::move(args), std::move(handler) };
}

CommandTable::Command const* CommandTable::find(std::string_view name) const
{
    auto it = m_commands.find(name);
    return it == m_commands.end() ? nullptr : &it->second;
}

std::vector<std::string> CommandTable::names() const
{
    std::vector<std::string> out;
    for (auto const& [n, c] : m_commands)
        out.push_back(n);
    return out;
}

// Messages as QEMU's qobject input visitor words them (qapi/qobject-input-visitor.c, with
// QERR_MISSING_PARAMETER, QERR_INVALID_PARAMETER_TYPE and QERR_INVALID_PARAMETER_VALUE of
// include/qapi/qmp/qerror.h).
static Error missing(std::string_view name) { return generic_error("Parameter '" + std::string(name) + "' is missing"); }
static Error wrong_type(std::string_view name, char const* type)
{
    return generic_error("Invalid parameter type for '" + std::string(name) + "', expected: " + type);
}
static Error unexpected(std::string_view name) { return generic_error("Parameter '" + std::string(name) + "' is unexpected"); }

// qobject_input_type_int64(): a number that is a signed 64-bit integer.
static bool is_int64(Json const& v)
{
    if (v.is_number_unsigned())
        return v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max());
    return v.is_number_integer();
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
    if (is_int64(*it))
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

Result<std::optional<uint64_t>, Error> arg_opt_uint64(Json const& args, char const* name)
{
    auto it = args.find(name);
    if (it == args.end())
        return std::optional<uint64_t> {};
    // qobject_input_type_uint64(): an unsigned 64-bit integer, or (for backward compatibility,
    // QEMU says) a negative signed one taken modulo 2^64; anything else "expects uint64".
    if (it->is_number_unsigned())
        return std::optional<uint64_t> { it->get<uint64_t>() };
    if (it->is_number_integer())
        return std::optional<uint64_t> { uint64_t(it->get<int64_t>()) };
    return make_unexpected(generic_error("Parameter '" + std::string(name) + "' expects uint64"));
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

// A QAPI command's marshaller (generated qmp_marshal_*): each declared member in declaration
// order (missing, wrong type), then visit_check_struct() for members left over.
Result<Json, Error> check_arguments(std::vector<ArgSpec> const& schema, Json const& args)
{
    Json out = Json::object();
    for (auto const& spec : schema) {
        auto it = args.find(spec.name);
        if (it == args.end()) {
            if (spec.required)
                return make_unexpected(missing(spec.name));
            continue;
        }
        switch (spec.type) {
        case ArgType::Int:
            out[spec.name] = TRY(arg_opt_int(args, spec.name)).value();
            break;
        case ArgType::Uint64:
            out[spec.name] = TRY(arg_opt_uint64(args, spec.name)).value();
            break;
        case ArgType::String:
            out[spec.name] = TRY(arg_opt_string(args, spec.name)).value();
            break;
        case ArgType::Bool:
            out[spec.name] = TRY(arg_opt_bool(args, spec.name)).value();
            break;
        case ArgType::Array:
            // qobject_input_start_list(): QERR_INVALID_PARAMETER_TYPE with "array".
            if (!it->is_array())
                return make_unexpected(wrong_type(spec.name, "array"));
            out[spec.name] = *it;
            break;
        }
    }
    // QEMU names the first leftover in its hash table's order; with several, sevemu names the
    // first in alphabetical order (QUIRKS.md).
    // (No structured binding here: clang before 16 cannot capture one in a lambda.)
    for (auto const& item : args.items()) {
        std::string const& key = item.key();
        if (std::none_of(schema.begin(), schema.end(), [&](ArgSpec const& a) { return key == a.name; }))
            return make_unexpected(unexpected(key));
    }
    return out;
}

Session::Session(CommandTable const& commands) : m_commands(commands), m_stream(std::make_unique<JsonStream>()) {}
Session::~Session() = default;

static std::string dump_line(Json const& j)
{
    // Parsed strings are valid UTF-8 (the parser validates them), but a "stray" error echoes raw
    // input bytes: those that are not UTF-8 are written as U+FFFD (replace, never throw).
    return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\r\n";
}

std::string Session::greeting() const
{
    Json g = { { "QMP",
        { { "version", { { "qemu", { { "micro", 0 }, { "minor", 1 }, { "major", 0 } } }, { "package", "sevemu" } } },
            { "capabilities", Json::array() } } } };
    return dump_line(g);
}

std::string Session::reply_error(Error const& e, Json const* id) const
{
    Json r = { { "error", { { "class", e.error_class }, { "desc", e.desc } } } };
    if (id)
        r["id"] = *id;
    return dump_line(r);
}

std::string format_event(std::string_view name, Json const& data)
{
    auto now = std::chrono::system_clock::now().time_since_epoch();
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    Json e = { { "event", std::string(name) }, { "timestamp", { { "seconds", us / 1000000 }, { "microseconds", us % 1000000 } } } };
    if (!data.is_null())
        e["data"] = data;
    return dump_line(e);
}

// QEMU qobject/qdict.c: a QDict is 512 buckets chosen by tdb_hash(), each a list with the latest
// insertion first, and it is walked bucket by bucket. qmp_dispatch_check_obj() reports the first
// bad member in that order, so sevemu walks the request's members in the same order. (Keys are
// hashed as QEMU stores them, in modified UTF-8: U+0000 as 0xC0 0x80.)
static uint32_t tdb_hash(std::string_view key)
{
    std::string k;
    for (char c : key) {
        if (c == '\0')
            k += "\xC0\x80";
        else
            k.push_back(c);
    }
    uint32_t value = 0x238F13AFu * uint32_t(k.size());
    for (uint32_t i = 0; i < k.size(); ++i)
        value = value + (uint32_t(uint8_t(k[i])) << (i * 5 % 24));
    return 1103515243u * value + 12345u;
}

static constexpr uint32_t kQdictBuckets = 512; // QDICT_BUCKET_MAX

static std::vector<std::string> qdict_order(std::vector<std::string> keys)
{
    // Each key's bucket is hashed once, not once per comparison.
    struct Entry {
        uint32_t bucket;
        size_t index;
    };
    std::vector<Entry> order;
    order.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i)
        order.push_back({ tdb_hash(keys[i]) % kQdictBuckets, i });
    std::sort(order.begin(), order.end(), [](Entry const& a, Entry const& b) {
        return a.bucket != b.bucket ? a.bucket < b.bucket : a.index > b.index;
    });
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (auto const& e : order)
        out.push_back(std::move(keys[e.index]));
    return out;
}

// One complete JSON text. Checks follow QEMU's monitor/qmp.c (handle_qmp_command,
// monitor_qmp_dispatch) and qapi/qmp-dispatch.c (qmp_dispatch, qmp_dispatch_check_obj).
std::string Session::handle(JsonMessage&& msg)
{
    // A parse error is answered without an id: there is no request to take one from.
    if (!msg.value)
        return reply_error(generic_error(msg.error), nullptr);
    Json& req = *msg.value;
    if (!req.is_object())
        return reply_error(generic_error("QMP input must be a JSON object"), nullptr);
    // Any JSON value is a valid id and is echoed as it came.
    Json const* id = req.contains("id") ? &req["id"] : nullptr;
    // "exec-oob" is a member only when out-of-band execution was negotiated; sevemu offers no
    // capabilities, so it is unexpected like any other.
    for (auto const& key : qdict_order(msg.top_keys)) {
        if (key == "execute") {
            if (!req[key].is_string())
                return reply_error(generic_error("QMP input member 'execute' must be a string"), id);
        } else if (key == "arguments") {
            if (!req[key].is_object())
                return reply_error(generic_error("QMP input member 'arguments' must be an object"), id);
        } else if (key != "id") {
            return reply_error(generic_error("QMP input member '" + key + "' is unexpected"), id);
        }
    }
    if (!req.contains("execute"))
        return reply_error(generic_error("QMP input lacks member 'execute'"), id);
    std::string name = req["execute"].get<std::string>();
    // Taken out of the request, not copied (the request is ours; only its id is used later).
    Json args = req.contains("arguments") ? std::move(req["arguments"]) : Json::object();

    // Until negotiation the only command is qmp_capabilities; QEMU's "not found" then says so.
    auto not_found = [&]() {
        if (!m_negotiated)
            return reply_error({ "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'" }, id);
        return reply_error({ "CommandNotFound", "The command " + name + " has not been found" }, id);
    };
    auto reply = [&](Json value) {
        Json r = { { "return", std::move(value) } };
        if (id)
            r["id"] = *id;
        return dump_line(r);
    };

    if (name == "qmp_capabilities") {
        // qapi/control.json: { 'command': 'qmp_capabilities', 'data': { '*enable': [ 'QMPCapability' ] } }
        // QMPCapability is [ 'oob' ]. An unknown element is refused by the enum visitor, which
        // names a list element "null" (qapi/qapi-visit-core.c input_type_enum).
        if (args.contains("enable")) {
            auto const& en = args["enable"];
            if (!en.is_array())
                return reply_error(wrong_type("enable", "array"), id);
            for (size_t i = 0; i < en.size(); ++i) {
                if (!en[i].is_string())
                    return reply_error(wrong_type("enable[" + std::to_string(i) + "]", "string"), id);
                if (en[i].get<std::string>() != "oob")
                    return reply_error(generic_error("Parameter 'null' does not accept value '" + en[i].get<std::string>() + "'"), id);
            }
        }
        for (auto const& [key, value] : args.items())
            if (key != "enable")
                return reply_error(unexpected(key), id);
        if (m_negotiated)
            return reply_error({ "CommandNotFound", "Capabilities negotiation is already complete, command ignored" }, id);
        // monitor/qmp.c qmp_caps_accept(): sevemu's greeting offers no capability (no "oob").
        if (args.contains("enable") && !args["enable"].empty())
            return reply_error(generic_error("Capability 'oob' not available"), id);
        m_negotiated = true;
        return reply(Json::object());
    }
    if (!m_negotiated)
        return not_found();
    auto const* cmd = m_commands.find(name);
    if (!cmd)
        return not_found();
    auto checked = check_arguments(cmd->args, args);
    if (!checked)
        return reply_error(checked.error(), id);
    auto result = cmd->handler(*checked);
    if (!result)
        return reply_error(result.error(), id);
    if (name == "quit")
        m_close = true;
    return reply(result->is_null() ? Json::object() : std::move(*result));
}

std::vector<std::string> Session::feed(std::string_view bytes)
{
    std::vector<std::string> replies;
    if (m_close)
        return replies; // after "quit" nothing more is read (QEMU is exiting)
    m_stream->feed(bytes, [&](JsonMessage m) {
        if (!m_close)
            replies.push_back(handle(std::move(m)));
    });
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
