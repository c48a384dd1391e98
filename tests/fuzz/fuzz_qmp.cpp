// Fuzz harness `qmp`: the QMP byte stream as a client sends it, through qmp::Session (the
// protocol state without sockets, emulator/qmp/qmp.h).
//
// Input: byte 0 chooses how the stream is cut into reads (1..64 bytes per read); the rest is
// the byte stream. Properties checked:
//   - the greeting and every reply is exactly one JSON object on one line ending in "\r\n"
//     (QEMU's monitor writes one JSON text per line; a client splits on newlines);
//   - a reply is {"return": ..} or {"error": {"class": STRING, "desc": STRING}}, with at most an
//     "id" besides, and the error class is one of QEMU's (qapi/error.json ErrorClass);
//   - cutting the stream into different reads changes nothing: the same replies in the same
//     order, the same close decision (a TCP peer may deliver any split);
//   - a reply's "id", when present, is a value the client actually sent (it is echoed, never made up).
#include "fuzz_check.h"

#include "emulator/qmp/qmp.h"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

using namespace sevemu;
using namespace sevemu::qmp;

namespace {

// Commands shaped like sevemu's (tools/sevemu/qmp_commands.cpp): no arguments, required and
// optional arguments of each type, declared in a schema (Session checks arguments against it
// before the handler runs; a command added without one takes no arguments at all).
CommandTable make_table()
{
    CommandTable t;
    t.add("query-status", [](Json const&) -> Result<Json, Error> {
        return Json { { "status", "running" }, { "running", true }, { "singlestep", false } };
    });
    t.add("stop", [](Json const&) -> Result<Json, Error> { return Json::object(); });
    t.add("quit", [](Json const&) -> Result<Json, Error> { return Json::object(); });
    t.add("pmemsave", { { "val", ArgType::Int, true }, { "size", ArgType::Int, true }, { "filename", ArgType::String, true } },
        [](Json const& a) -> Result<Json, Error> {
        auto val = TRY(arg_int(a, "val"));
        auto size = TRY(arg_int(a, "size"));
        auto file = TRY(arg_string(a, "filename"));
        return Json { { "echo", val ^ size }, { "file", file } };
    });
    t.add("human-monitor-command", { { "command-line", ArgType::String, true }, { "cpu-index", ArgType::Int, false } },
        [](Json const& a) -> Result<Json, Error> {
        auto line = TRY(arg_string(a, "command-line"));
        auto cpu = TRY(arg_opt_int(a, "cpu-index"));
        return Json(line + (cpu ? std::to_string(*cpu) : ""));
    });
    t.add("system_reset", { { "force", ArgType::Bool, false }, { "reason", ArgType::String, false } },
        [](Json const& a) -> Result<Json, Error> {
        auto force = TRY(arg_opt_bool(a, "force"));
        auto why = TRY(arg_opt_string(a, "reason"));
        if (why && why->empty())
            return make_unexpected(generic_error("empty reason"));
        return Json { { "forced", force.value_or(false) } };
    });
    return t;
}

bool known_class(std::string const& c)
{
    return c == "GenericError" || c == "CommandNotFound" || c == "DeviceNotActive" || c == "DeviceNotFound"
        || c == "KVMMissingCap";
}

void check_line(std::string const& line, std::string_view stream)
{
    FUZZ_CHECK(line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0, "reply does not end in CRLF");
    std::string_view body(line.data(), line.size() - 2);
    FUZZ_CHECK(body.find('\n') == std::string_view::npos && body.find('\r') == std::string_view::npos,
        "reply spans several lines: %s", line.c_str());
    Json j = Json::parse(body, nullptr, false);
    FUZZ_CHECK(!j.is_discarded(), "reply is not JSON: %s", line.c_str());
    FUZZ_CHECK(j.is_object(), "reply is not an object: %s", line.c_str());
    bool has_return = j.contains("return"), has_error = j.contains("error");
    FUZZ_CHECK(has_return != has_error, "reply needs exactly one of return/error: %s", line.c_str());
    for (auto const& [k, v] : j.items())
        FUZZ_CHECK(k == "return" || k == "error" || k == "id", "unexpected member '%s'", k.c_str());
    if (has_error) {
        auto const& e = j["error"];
        FUZZ_CHECK(e.is_object() && e.contains("class") && e.contains("desc") && e.size() == 2,
            "malformed error: %s", line.c_str());
        FUZZ_CHECK(e["class"].is_string() && known_class(e["class"].get<std::string>()), "unknown class: %s",
            line.c_str());
        FUZZ_CHECK(e["desc"].is_string() && !e["desc"].get<std::string>().empty(), "empty desc: %s", line.c_str());
    }
    if (j.contains("id") && j["id"].is_string()) {
        // The id is echoed from the request: its text must occur in what the client sent (a
        // string id is a JSON string there, possibly escaped differently, so compare unescaped
        // printable ids only).
        auto id = j["id"].get<std::string>();
        bool plain = true;
        for (char c : id)
            plain &= c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
        if (plain && stream.find('\\') == std::string_view::npos)
            FUZZ_CHECK(stream.find(id) != std::string_view::npos, "id '%s' was never sent", id.c_str());
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(uint8_t const* data, size_t size)
{
    if (size == 0)
        return 0;
    static CommandTable const table = make_table();
    size_t cut = 1 + data[0] % 64;
    std::string_view stream(reinterpret_cast<char const*>(data + 1), size - 1);

    Session whole(table);
    std::string greeting = whole.greeting();
    FUZZ_CHECK(greeting.size() >= 2 && greeting.compare(greeting.size() - 2, 2, "\r\n") == 0, "greeting not CRLF-ended");
    Json g = Json::parse(std::string_view(greeting).substr(0, greeting.size() - 2), nullptr, false);
    FUZZ_CHECK(g.is_object() && g.size() == 1 && g.contains("QMP") && g["QMP"]["capabilities"].is_array(),
        "greeting: %s", greeting.c_str());
    std::vector<std::string> a = whole.feed(stream);
    for (auto const& r : a)
        check_line(r, stream);

    Session pieces(table);
    std::vector<std::string> b;
    for (size_t at = 0; at < stream.size(); at += cut)
        for (auto& r : pieces.feed(stream.substr(at, cut)))
            b.push_back(std::move(r));
    FUZZ_CHECK(a.size() == b.size(), "%zu replies in one read, %zu in reads of %zu bytes", a.size(), b.size(), cut);
    for (size_t i = 0; i < a.size(); ++i)
        FUZZ_CHECK(a[i] == b[i], "reply %zu differs with reads of %zu bytes: %s vs %s", i, cut, a[i].c_str(), b[i].c_str());
    FUZZ_CHECK(whole.wants_close() == pieces.wants_close(), "close decision depends on the read size");
    FUZZ_CHECK(whole.negotiated() == pieces.negotiated(), "negotiation depends on the read size");
    return 0;
}
