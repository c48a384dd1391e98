// Integration tests: one QMP connection to a sevemu started with `-qmp unix:PATH,server=on,wait=off`
// — the greeting and qmp_capabilities, commands with their answers, and the events that arrive
// in between kept in order (QEMU docs/interop/qmp-spec.txt). Catch2 and nlohmann/json stay in
// the tests that include this header.
#pragma once

#include "tests/integration/unix_connect.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <unistd.h>
#include <vector>

namespace sevemu::testing {

struct QmpConnection {
    int fd { -1 };
    std::string pending;
    std::vector<nlohmann::json> events;

    QmpConnection() = default;
    QmpConnection(QmpConnection const&) = delete;
    QmpConnection& operator=(QmpConnection const&) = delete;
    ~QmpConnection()
    {
        if (fd >= 0)
            ::close(fd);
    }

    // Connects (retrying while sevemu starts), reads the greeting, leaves capabilities negotiation.
    void open(std::string const& sock, int recv_timeout_s)
    {
        fd = connect_unix(sock, 400, recv_timeout_s);
        REQUIRE(fd >= 0);
        REQUIRE(line().contains("QMP"));
        REQUIRE(execute("qmp_capabilities").contains("return"));
    }
    // One message (a line ending in CRLF).
    nlohmann::json line()
    {
        for (;;) {
            auto pos = pending.find("\r\n");
            if (pos != std::string::npos) {
                auto text = pending.substr(0, pos);
                pending.erase(0, pos + 2);
                return nlohmann::json::parse(text);
            }
            char buf[4096];
            ssize_t n = ::read(fd, buf, sizeof buf);
            REQUIRE(n > 0);
            pending.append(buf, size_t(n));
        }
    }
    // The command's answer; events that came first go to `events`.
    nlohmann::json execute(std::string const& name, nlohmann::json args = nullptr)
    {
        nlohmann::json req = { { "execute", name } };
        if (!args.is_null())
            req["arguments"] = args;
        std::string text = req.dump();
        REQUIRE(::write(fd, text.data(), text.size()) == ssize_t(text.size()));
        for (;;) {
            nlohmann::json r = line();
            if (!r.contains("event"))
                return r;
            events.push_back(r);
        }
    }
    nlohmann::json ok(std::string const& name, nlohmann::json args = nullptr)
    {
        nlohmann::json r = execute(name, args);
        INFO(name << " " << args.dump() << " -> " << r.dump());
        REQUIRE(r.contains("return"));
        return r["return"];
    }
    // A GenericError's description.
    std::string error(std::string const& name, nlohmann::json args = nullptr)
    {
        nlohmann::json r = execute(name, args);
        INFO(name << " " << args.dump() << " -> " << r.dump());
        REQUIRE(r.contains("error"));
        CHECK(r["error"]["class"] == "GenericError");
        return r["error"]["desc"];
    }
};

} // namespace sevemu::testing
