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
    t.add("pmemsave", [](Json const& a) -> Result<Json, Error> {
        auto val = TRY(arg_int(a, "val"));
        auto size = TRY(arg_int(a, "size"));
        auto file = TRY(arg_string(a, "filename"));
        return Json { { "echo", val + size }, { "file", file } };
    });
    t.add("quit", [](Json const&) -> Result<Json, Error> { return Json::object(); });
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

TEST_CASE("an oversized request is one error, and the requests after it are served", "[qmp]")
{
    auto table = make_table();
    Session s(table);
    (void)one(s, R"({"execute":"qmp_capabilities"})");
    // 3 MiB of a base64-looking string with a quote in the middle of it, fed in pieces.
    std::string big = R"({"execute":"pmemsave","arguments":{"val":1,"size":2,"filename":")" + std::string(3 << 20, 'A')
        + R"(\"x{[)" + std::string(1000, 'B') + R"("}})";
    std::vector<std::string> replies;
    for (size_t at = 0; at < big.size(); at += 4096)
        for (auto& r : s.feed(std::string_view(big).substr(at, 4096)))
            replies.push_back(r);
    REQUIRE(replies.size() == 1);
    CHECK(Json::parse(replies[0])["error"]["desc"] == "JSON token size limit exceeded");
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
        c.send("this-is-not-json}\n");
        CHECK(c.line()["error"]["class"] == "GenericError");
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
