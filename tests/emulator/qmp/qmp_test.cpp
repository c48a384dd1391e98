// QMP as a client sees it: byte-level session tests, then real sockets (Unix and TCP).
#include "emulator/qmp/qmp.h"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <cerrno>
#include <unistd.h>

using namespace sevemu;
using namespace sevemu::qmp;

namespace {

CommandTable make_table()
{
    CommandTable t;
    t.add("query-status", [](Json const&) -> Result<Json, Error> {
        return Json { { "status", "running" }, { "running", true }, { "singlestep", false } };
    });
    t.add("pmemsave", { { "val", ArgType::Int, true }, { "size", ArgType::Int, true }, { "filename", ArgType::String, true } },
        [](Json const& a) -> Result<Json, Error> {
        auto val = TRY(arg_int(a, "val"));
        auto size = TRY(arg_int(a, "size"));
        auto file = TRY(arg_string(a, "filename"));
        return Json { { "echo", val + size }, { "file", file } };
    });
    t.add("quit", [](Json const&) -> Result<Json, Error> { return Json::object(); });
    t.add("secret", { { "gpa", ArgType::Uint64, false }, { "flag", ArgType::Bool, false } }, [](Json const& a) -> Result<Json, Error> {
        return Json { { "gpa", TRY(arg_opt_uint64(a, "gpa")).value_or(7) } };
    });
    return t;
}

Json one(Session& s, std::string const& text)
{
    auto replies = s.feed(text);
    REQUIRE(replies.size() == 1);
    REQUIRE(replies[0].size() >= 2);
    CHECK(replies[0].substr(replies[0].size() - 2) == "\r\n");
    return Json::parse(replies[0]);
}

} // namespace

TEST_CASE("greeting and capabilities negotiation follow QEMU", "[qmp]")
{
    auto table = make_table();
    Session s(table);
    Json g = Json::parse(s.greeting());
    CHECK(g["QMP"]["capabilities"].is_array());
    CHECK(g["QMP"]["version"]["qemu"].is_object());
    Json r = one(s, R"({"execute":"query-status"})");
    CHECK(r["error"]["class"] == "CommandNotFound");
    CHECK(r["error"]["desc"] == "Expecting capabilities negotiation with 'qmp_capabilities'");
    r = one(s, R"({"execute":"qmp_capabilities","arguments":{"enable":["oob"]}})");
    CHECK(r["error"]["desc"] == "Capability 'oob' not available");
    r = one(s, R"({"execute":"qmp_capabilities","id":7})");
    CHECK(r["return"] == Json::object());
    CHECK(r["id"] == 7);
    r = one(s, R"({"execute":"qmp_capabilities"})");
    CHECK(r["error"]["class"] == "CommandNotFound");
}

TEST_CASE("malformed requests get an error reply and the session goes on", "[qmp]")
{
    auto table = make_table();
    Session s(table);
    (void)one(s, R"({"execute":"qmp_capabilities"})");
    CHECK(one(s, R"({"execute":"nope","id":"x"})")["error"]["desc"] == "The command nope has not been found");
    CHECK(one(s, R"({"execute":"nope","id":"x"})")["id"] == "x");
    CHECK(one(s, R"({"arguments":{}})")["error"]["desc"] == "QMP input lacks member 'execute'");
    CHECK(one(s, R"({"execute":42})")["error"]["desc"] == "QMP input member 'execute' must be a string");
    CHECK(one(s, R"({"execute":"query-status","arguments":[]})")["error"]["desc"] == "QMP input member 'arguments' must be an object");
    CHECK(one(s, R"({"execute":"query-status","bogus":1})")["error"]["desc"] == "QMP input member 'bogus' is unexpected");
    CHECK(one(s, R"([1,2])")["error"]["desc"] == "QMP input must be a JSON object");
    CHECK(one(s, R"({"execute": tru})")["error"]["class"] == "GenericError");
    CHECK(one(s, "}")["error"]["class"] == "GenericError");
    CHECK(one(s, "42\n")["error"]["desc"] == "QMP input must be a JSON object");
    CHECK(one(s, R"({"execute":"pmemsave","arguments":{"val":1,"size":2}})")["error"]["desc"] == "Parameter 'filename' is missing");
    CHECK(one(s, R"({"execute":"pmemsave","arguments":{"val":"1","size":2,"filename":"f"}})")["error"]["desc"]
        == "Invalid parameter type for 'val', expected: integer");
    // Still serving.
    CHECK(one(s, R"({"execute":"query-status"})")["return"]["status"] == "running");
}

TEST_CASE("requests split across reads, several per read, braces inside strings", "[qmp]")
{
    auto table = make_table();
    Session s(table);
    std::string text = R"({"execute":"qmp_capabilities"}  {"execute":"pmemsave","arguments":{"val":1,"size":2,"filename":"a}{\"b"}})";
    std::vector<std::string> replies;
    for (char c : text)
        for (auto& r : s.feed(std::string(1, c)))
            replies.push_back(r);
    REQUIRE(replies.size() == 2);
    Json r = Json::parse(replies[1]);
    CHECK(r["return"]["file"] == "a}{\"b");
    CHECK(r["return"]["echo"] == 3);
}

TEST_CASE("a token over QEMU's 64 MiB limit is refused, and the requests after it are served", "[qmp]")
{
    auto table = make_table();
    Session s(table);
    (void)one(s, R"({"execute":"qmp_capabilities"})");
    // json-lexer.c: a token longer than MAX_TOKEN_SIZE is cut and refused; the lexer starts
    // afresh inside the string (its letters are stray bytes, the recovery skips to a structural
    // character), so the '}' that follows is a stray closing brace of its own.
    std::string big = R"({"execute":"pmemsave","arguments":{"val":1,"size":2,"filename":")";
    std::vector<std::string> replies;
    auto feed = [&](std::string_view text) {
        for (auto& r : s.feed(text))
            replies.push_back(r);
    };
    feed(big);
    std::string chunk(1 << 20, 'A');
    for (int i = 0; i < 65; ++i)
        feed(chunk);
    feed(R"("}})");
    REQUIRE(replies.size() == 4);
    CHECK(Json::parse(replies[0])["error"]["desc"] == "JSON token size limit exceeded");
    CHECK(Json::parse(replies[1])["error"]["desc"] == "JSON parse error, stray 'A'");
    CHECK(Json::parse(replies[2])["error"]["desc"] == "JSON parse error, expecting value");
    CHECK(Json::parse(replies[3])["error"]["desc"] == "JSON parse error, expecting value");
    CHECK(one(s, R"({"execute":"query-status"})")["return"]["status"] == "running");
    CHECK(one(s, R"({"execute":"pmemsave","arguments":{"val":1,"size":2,"filename":"f"}})")["return"]["echo"] == 3);
}

TEST_CASE("endpoints use QEMU's -qmp syntax", "[qmp]")
{
    auto u = parse_endpoint("unix:/tmp/x.sock,server=on,wait=off");
    REQUIRE(u.has_value());
    CHECK(u->kind == Endpoint::Kind::Unix);
    CHECK(u->path == "/tmp/x.sock");
    CHECK_FALSE(u->wait);
    auto t = parse_endpoint("tcp:127.0.0.1:4444,server,nowait");
    REQUIRE(t.has_value());
    CHECK(t->port == 4444);
    CHECK(parse_endpoint("tcp:127.0.0.1:99999,server=on").error().find("invalid port") != std::string::npos);
    CHECK_FALSE(parse_endpoint("unix:/tmp/x.sock").has_value()); // not a server
    CHECK_FALSE(parse_endpoint("stdio").has_value());
    CHECK_FALSE(parse_endpoint("unix:/tmp/x,server=on,frobnicate").has_value());
}

namespace {

struct Client {
    int fd { -1 };
    std::string pending;
    ~Client()
    {
        if (fd >= 0)
            ::close(fd);
    }
    void send(std::string const& s) { REQUIRE(::write(fd, s.data(), s.size()) == ssize_t(s.size())); }
    Json line()
    {
        while (true) {
            auto pos = pending.find("\r\n");
            if (pos != std::string::npos) {
                auto text = pending.substr(0, pos);
                pending.erase(0, pos + 2);
                return Json::parse(text);
            }
            char buf[4096];
            ssize_t n = ::read(fd, buf, sizeof buf);
            REQUIRE(n > 0);
            pending.append(buf, size_t(n));
        }
    }
};

void set_timeout(int fd)
{
    timeval tv { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

} // namespace

TEST_CASE("a QMP server over a Unix socket serves several clients in turn, with events", "[qmp]")
{
    auto table = make_table();
    std::string path = "/tmp/sevemu-qmp-test-" + std::to_string(::getpid()) + ".sock";
    auto ep = parse_endpoint("unix:" + path + ",server=on,wait=off");
    REQUIRE(ep.has_value());
    auto server = Server::start(*ep, table);
    REQUIRE(server.has_value());
    for (int round = 0; round < 3; ++round) {
        Client c;
        c.fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        set_timeout(c.fd);
        sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        REQUIRE(::connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
        CHECK(c.line().contains("QMP"));
        c.send("{\"execute\": \"qmp_capabilities\"}\n");
        CHECK(c.line()["return"] == Json::object());
        c.send("@not json\n");
        CHECK(c.line()["error"]["desc"] == "JSON parse error, stray '@'");
        c.send("{\"execute\": \"query-status\", \"id\": 1}");
        auto r = c.line();
        CHECK(r["return"]["running"] == true);
        CHECK(r["id"] == 1);
        (*server)->emit("STOP", Json::object());
        auto e = c.line();
        CHECK(e["event"] == "STOP");
        CHECK(e["timestamp"]["seconds"].is_number());
    }
    (*server)->stop();
    CHECK(::access(path.c_str(), F_OK) != 0);
}

TEST_CASE("a QMP server over TCP on loopback", "[qmp]")
{
    auto table = make_table();
    auto ep = parse_endpoint("tcp:127.0.0.1:0,server=on,wait=off");
    REQUIRE(ep.has_value());
    auto server = Server::start(*ep, table);
    REQUIRE(server.has_value());
    REQUIRE((*server)->port() != 0);
    Client c;
    c.fd = ::socket(AF_INET, SOCK_STREAM, 0);
    set_timeout(c.fd);
    sockaddr_in sa {};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((*server)->port());
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    (*server)->wait_for_client();
    CHECK(c.line().contains("QMP"));
    c.send(R"({"execute":"qmp_capabilities"}{"execute":"nope"})");
    CHECK(c.line()["return"] == Json::object());
    CHECK(c.line()["error"]["class"] == "CommandNotFound");
    // A second server on the same port is refused with a clear message.
    auto ep2 = parse_endpoint("tcp:127.0.0.1:" + std::to_string((*server)->port()) + ",server=on,wait=off");
    auto second = Server::start(*ep2, table);
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().find("cannot bind") != std::string::npos);
}

// --- Issue 9: hostile input, answered as QEMU 7.2 answers it (facts from qobject/json-*.c,
// qapi/qmp-dispatch.c, qapi/qobject-input-visitor.c; each text was checked against Debian's
// qemu-system-x86_64 7.2, see tests/integration/qmp_conformance_test.cpp).

namespace {

std::vector<Json> all(Session& s, std::string_view text)
{
    std::vector<Json> out;
    for (auto& r : s.feed(text))
        out.push_back(Json::parse(r));
    return out;
}

std::string deep(std::string const& head, size_t depth, std::string const& tail)
{
    return head + std::string(depth, '[') + std::string(depth, ']') + tail;
}

} // namespace

TEST_CASE("an id or argument nested 100,000 deep is refused, before and after negotiation, without a crash", "[qmp][fast]")
{
    auto table = make_table();
    Session s(table);
    for (int round = 0; round < 2; ++round) {
        std::string text = round == 0 ? deep(R"({"execute":"qmp_capabilities","id":)", 100000, "}")
                                      : deep(R"({"execute":"pmemsave","arguments":{"val":)", 100000, R"(,"size":1,"filename":"f"}})");
        auto replies = all(s, text);
        REQUIRE(!replies.empty());
        CHECK(replies[0]["error"]["class"] == "GenericError");
        CHECK(replies[0]["error"]["desc"] == "JSON nesting depth limit exceeded");
        CHECK_FALSE(replies[0].contains("id"));
        // QEMU's streamer starts afresh after the error, so the rest of the text is a stream of
        // fresh texts: every run of 1025 '[' exceeds the limit again, the leftover opens close
        // into one array (not an object), and each closer after that is a stray one; the rest of
        // the second text's members are scalars or stray separators. The exact sequence is
        // compared with QEMU's own in tests/integration/qmp_conformance_test.cpp.
        size_t head_tokens = round == 0 ? 1 : 2; // '{' (and the inner '{') count towards the depth
        size_t rest = 100000 - (1024 - head_tokens + 1);
        size_t nesting = 0, stray = 0, not_object = 0;
        for (auto const& r : replies) {
            CHECK(r["error"]["class"] == "GenericError");
            CHECK_FALSE(r.contains("id"));
            auto desc = r["error"]["desc"].get<std::string>();
            nesting += desc == "JSON nesting depth limit exceeded";
            stray += desc == "JSON parse error, expecting value";
            not_object += desc == "QMP input must be a JSON object";
        }
        CHECK(nesting == 1 + rest / 1025);
        CHECK(not_object == (round == 0 ? 1u : 5u)); // the leftover array; "size", 1, "filename", "f"
        CHECK(nesting + stray + not_object == replies.size());
        // Still serving, and still in the same negotiation state.
        if (round == 0) {
            CHECK(one(s, R"({"execute":"query-status"})")["error"]["class"] == "CommandNotFound");
            CHECK(one(s, R"({"execute":"qmp_capabilities"})")["return"] == Json::object());
        } else {
            CHECK(one(s, R"({"execute":"query-status"})")["return"]["status"] == "running");
        }
    }
    // Exactly at the limit (1024 open brackets and braces) a text is accepted.
    auto r = one(s, deep(R"({"execute":"query-status","id":)", 1023, "}"));
    CHECK(r["return"]["status"] == "running");
    CHECK(r["id"].is_array());
    auto over = all(s, deep(R"({"execute":"query-status","id":)", 1024, "}"));
    REQUIRE(!over.empty());
    CHECK(over[0]["error"]["desc"] == "JSON nesting depth limit exceeded");
}

TEST_CASE("unknown, missing and mistyped arguments are refused with QEMU's texts, and nothing runs", "[qmp][fast]")
{
    bool quit_ran = false;
    CommandTable t;
    t.add("quit", [&](Json const&) -> Result<Json, Error> {
        quit_ran = true;
        return Json::object();
    });
    Session s(t);
    (void)one(s, R"({"execute":"qmp_capabilities"})");
    auto r = one(s, R"({"execute":"quit","arguments":{"bogus":1},"id":"q"})");
    CHECK(r["error"]["class"] == "GenericError");
    CHECK(r["error"]["desc"] == "Parameter 'bogus' is unexpected");
    CHECK(r["id"] == "q");
    CHECK_FALSE(quit_ran);
    CHECK_FALSE(s.wants_close());

    auto table = make_table();
    Session p(table);
    (void)one(p, R"({"execute":"qmp_capabilities"})");
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"val":1,"size":2}})")["error"]["desc"] == "Parameter 'filename' is missing");
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"val":"1","size":2,"filename":"f"}})")["error"]["desc"]
        == "Invalid parameter type for 'val', expected: integer");
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"val":1.5,"size":2,"filename":"f"}})")["error"]["desc"]
        == "Invalid parameter type for 'val', expected: integer");
    // Past INT64_MAX an integer is no 'int'.
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"val":9223372036854775808,"size":2,"filename":"f"}})")["error"]["desc"]
        == "Invalid parameter type for 'val', expected: integer");
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"val":9223372036854775807,"size":2,"filename":null}})")["error"]["desc"]
        == "Invalid parameter type for 'filename', expected: string");
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"val":1,"size":2,"filename":"f","cpu-index":0}})")["error"]["desc"]
        == "Parameter 'cpu-index' is unexpected");
    // Missing and mistyped members are reported before unexpected ones, in declaration order.
    CHECK(one(p, R"({"execute":"pmemsave","arguments":{"zzz":1,"size":"x"}})")["error"]["desc"] == "Parameter 'val' is missing");
    // uint64: negative integers wrap (QEMU's backward compatibility); anything else "expects uint64".
    CHECK(one(p, R"({"execute":"secret","arguments":{"gpa":-1}})")["return"]["gpa"] == UINT64_MAX);
    CHECK(one(p, R"({"execute":"secret","arguments":{"gpa":18446744073709551615}})")["return"]["gpa"] == UINT64_MAX);
    CHECK(one(p, R"({"execute":"secret","arguments":{"gpa":18446744073709551616}})")["error"]["desc"] == "Parameter 'gpa' expects uint64");
    CHECK(one(p, R"({"execute":"secret","arguments":{"gpa":1.0}})")["error"]["desc"] == "Parameter 'gpa' expects uint64");
    CHECK(one(p, R"({"execute":"secret","arguments":{"gpa":"1"}})")["error"]["desc"] == "Parameter 'gpa' expects uint64");
    CHECK(one(p, R"({"execute":"secret","arguments":{"flag":1}})")["error"]["desc"] == "Invalid parameter type for 'flag', expected: boolean");
    CHECK(one(p, R"({"execute":"secret"})")["return"]["gpa"] == 7);
    // qmp_capabilities checks its arguments in both modes.
    CHECK(one(p, R"({"execute":"qmp_capabilities","arguments":{"enable":[1]}})")["error"]["desc"]
        == "Invalid parameter type for 'enable[0]', expected: string");
    CHECK(one(p, R"({"execute":"qmp_capabilities","arguments":{"enable":["oob","x"]}})")["error"]["desc"]
        == "Parameter 'null' does not accept value 'x'");
    CHECK(one(p, R"({"execute":"qmp_capabilities","arguments":{"enable":[]}})")["error"]["class"] == "CommandNotFound");
}

TEST_CASE("duplicate keys are a parse error at any depth", "[qmp][fast]")
{
    bool quit_ran = false;
    CommandTable t;
    t.add("query-status", [](Json const&) -> Result<Json, Error> { return Json::object(); });
    t.add("quit", [&](Json const&) -> Result<Json, Error> {
        quit_ran = true;
        return Json::object();
    });
    Session s(t);
    CHECK(one(s, R"({"execute":"qmp_capabilities","execute":"quit"})")["error"]["desc"] == "JSON parse error, duplicate key");
    CHECK_FALSE(s.negotiated());
    (void)one(s, R"({"execute":"qmp_capabilities"})");
    auto r = one(s, R"({"execute":"query-status","execute":"quit"})");
    CHECK(r["error"]["class"] == "GenericError");
    CHECK(r["error"]["desc"] == "JSON parse error, duplicate key");
    CHECK_FALSE(quit_ran);
    CHECK(one(s, R"({"execute":"query-status","id":{"a":1,"b":{"c":1,"c":2}}})")["error"]["desc"] == "JSON parse error, duplicate key");
    // The same name spelled with an escape is the same key.
    CHECK(one(s, R"({"execute":"query-status","\u0065xecute":"quit"})")["error"]["desc"] == "JSON parse error, duplicate key");
    CHECK_FALSE(quit_ran);
}

TEST_CASE("lexical errors are answered at once and the lexer recovers as QEMU's does", "[qmp][fast]")
{
    auto table = make_table();
    Session s(table);
    (void)one(s, R"({"execute":"qmp_capabilities"})");
    // A newline inside an unterminated string: a parse error now, and the next request (same
    // connection, same read) is served.
    auto replies = all(s, "{\"execute\":\"qu\n{\"execute\":\"query-status\"}");
    REQUIRE(replies.size() == 2);
    CHECK(replies[0]["error"]["desc"] == "JSON parse error, stray '\"qu\n'");
    CHECK(replies[1]["return"]["status"] == "running");
    // The same, split across reads.
    CHECK(all(s, "{\"execute\":\"qu").empty());
    replies = all(s, "\n");
    REQUIRE(replies.size() == 1);
    CHECK(replies[0]["error"]["class"] == "GenericError");
    CHECK(one(s, R"({"execute":"query-status"})")["return"]["status"] == "running");
    // A stray byte, then the recovery skips to the next structural character: '}' is a closer
    // without an opener.
    replies = all(s, R"({"execute": @}{"execute":"query-status"})");
    REQUIRE(replies.size() == 3);
    CHECK(replies[0]["error"]["desc"] == "JSON parse error, stray '@'");
    CHECK(replies[1]["error"]["desc"] == "JSON parse error, expecting value");
    CHECK(replies[2]["return"]["status"] == "running");
    // After a stray byte the lexer skips to a structural or control character (a newline here).
    CHECK(one(s, "\x01\n")["error"]["desc"] == "JSON parse error, stray '\x01'");
    CHECK(one(s, "00 tru 42\n")["error"]["desc"] == "JSON parse error, stray '00'");
    CHECK(one(s, "tru ")["error"]["desc"] == "JSON parse error, invalid keyword 'tru'");
    CHECK(one(s, "42 ")["error"]["desc"] == "QMP input must be a JSON object");
    CHECK(one(s, R"("abc")")["error"]["desc"] == "QMP input must be a JSON object");
    CHECK(one(s, "}")["error"]["desc"] == "JSON parse error, expecting value");
    CHECK(one(s, "[1 2]")["error"]["desc"] == "JSON parse error, expected separator in list");
    CHECK(one(s, R"({"a":1 "b":2})")["error"]["desc"] == "JSON parse error, expected separator in dict");
    CHECK(one(s, R"({"a" 1})")["error"]["desc"] == "JSON parse error, missing : in object pair");
    CHECK(one(s, "{1:2}")["error"]["desc"] == "JSON parse error, key is not a string in object");
    CHECK(one(s, R"({"execute":"\q"})")["error"]["desc"] == "JSON parse error, invalid escape sequence in string");
    CHECK(one(s, R"({"execute":"\uD800"})")["error"]["desc"] == "JSON parse error, \\uD800 is not a valid Unicode character");
    CHECK(one(s, "{\"execute\":\"\xc3\"}")["error"]["desc"] == "JSON parse error, invalid UTF-8 sequence in string");
    // Single quotes, as QEMU's extension allows.
    CHECK(one(s, "{'execute':'query-status'}")["return"]["status"] == "running");
    // The request's members, QEMU's checks, the id echoed when there is a request to take it from.
    CHECK(one(s, R"({"execute":"query-status","id":1,"b":1,"c":1,"d":1,"e":1,"f":1})")["error"]["desc"]
        == "QMP input member 'd' is unexpected"); // QEMU's QDict order (tdb_hash), checked against QEMU
    CHECK(one(s, R"({"exec-oob":"query-status"})")["error"]["desc"] == "QMP input member 'exec-oob' is unexpected");
    CHECK(one(s, R"({"id":3})")["id"] == 3);
}

namespace {

int connect_unix(std::string const& path)
{
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    return fd;
}

// Writes requests without ever reading until the server stops taking them (the socket would
// block for `quiet`) or the connection is gone; returns false when it is gone.
bool flood(int fd, std::chrono::milliseconds quiet, std::chrono::seconds limit)
{
    std::string req;
    for (int i = 0; i < 64; ++i)
        req += R"({"execute":"query-status","id":"padding-padding-padding-padding"})";
    auto start = std::chrono::steady_clock::now();
    auto last_progress = start;
    while (std::chrono::steady_clock::now() - start < limit) {
        ssize_t n = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            last_progress = std::chrono::steady_clock::now();
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return false;
        if (std::chrono::steady_clock::now() - last_progress > quiet)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

} // namespace

TEST_CASE("a client that floods requests and never reads is disconnected; memory stays bounded", "[qmp]")
{
    auto table = make_table();
    std::string path = "/tmp/sevemu-qmp-flood-" + std::to_string(::getpid()) + ".sock";
    ServerLimits limits;
    limits.pause_reading_at = 64 * 1024;
    limits.max_queued_output = 256 * 1024;
    limits.stalled_for = std::chrono::milliseconds(500);
    auto server = Server::start(*parse_endpoint("unix:" + path + ",server=on,wait=off"), table, limits);
    REQUIRE(server.has_value());
    int fd = connect_unix(path);
    std::string nego = R"({"execute":"qmp_capabilities"})";
    REQUIRE(::write(fd, nego.data(), nego.size()) == ssize_t(nego.size()));
    // The server stops reading once 64 KiB of replies wait, and cuts the client off when none of
    // them is taken for 0.5 s: the flood ends with the connection gone, well within the limit.
    auto start = std::chrono::steady_clock::now();
    bool alive = flood(fd, std::chrono::seconds(5), std::chrono::seconds(20));
    CHECK_FALSE(alive);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
    ::close(fd);
    // Another client is served normally.
    Client c;
    c.fd = connect_unix(path);
    set_timeout(c.fd);
    CHECK(c.line().contains("QMP"));
    c.send(R"({"execute":"qmp_capabilities"})");
    CHECK(c.line()["return"] == Json::object());
    (*server)->stop();
}

TEST_CASE("events to a client that never reads are bounded: past the queue's limit it is disconnected", "[qmp]")
{
    auto table = make_table();
    std::string path = "/tmp/sevemu-qmp-events-" + std::to_string(::getpid()) + ".sock";
    ServerLimits limits;
    limits.max_queued_output = 256 * 1024;
    limits.stalled_for = std::chrono::seconds(60); // only the size bound can act here
    auto server = Server::start(*parse_endpoint("unix:" + path + ",server=on,wait=off"), table, limits);
    REQUIRE(server.has_value());
    int fd = connect_unix(path);
    std::string nego = R"({"execute":"qmp_capabilities"})";
    REQUIRE(::write(fd, nego.data(), nego.size()) == ssize_t(nego.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // ~20 MiB of events: far more than the socket and the queue hold.
    Json data = { { "pad", std::string(1000, 'x') } };
    for (int i = 0; i < 20000; ++i)
        (*server)->emit("STOP", data);
    // Drain: the client gets what was written before the cut, then end of file.
    set_timeout(fd);
    size_t total = 0;
    char buf[65536];
    while (true) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) {
            CHECK(n == 0); // closed by the server, not a timeout
            break;
        }
        total += size_t(n);
    }
    CHECK(total < size_t(4) << 20);
    ::close(fd);
    (*server)->stop();
}

TEST_CASE("stop() returns promptly while a client leaves its replies unread", "[qmp]")
{
    auto table = make_table();
    std::string path = "/tmp/sevemu-qmp-stop-" + std::to_string(::getpid()) + ".sock";
    auto server = Server::start(*parse_endpoint("unix:" + path + ",server=on,wait=off"), table);
    REQUIRE(server.has_value());
    int fd = connect_unix(path);
    std::string nego = R"({"execute":"qmp_capabilities"})";
    REQUIRE(::write(fd, nego.data(), nego.size()) == ssize_t(nego.size()));
    // Until the server stops reading: its replies to this client fill the socket and its queue.
    CHECK(flood(fd, std::chrono::milliseconds(500), std::chrono::seconds(20)));
    auto start = std::chrono::steady_clock::now();
    (*server)->stop();
    auto took = std::chrono::steady_clock::now() - start;
    CHECK(took < std::chrono::milliseconds(1200));
    ::close(fd);
}
