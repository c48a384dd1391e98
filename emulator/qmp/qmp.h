// sevemu — QMP, the QEMU Machine Protocol, server side (INTERFACES.md §4).
// The wire protocol is QEMU's: a greeting, capabilities negotiation with "qmp_capabilities",
// then {"execute": NAME, "arguments": {...}, "id": ...} answered by {"return": ...} or
// {"error": {"class": ..., "desc": ...}}, and asynchronous events. Any QMP client works.
//
// Only nlohmann's forward header is included here; Boost.Asio stays inside qmp_server.cpp.
#pragma once

#include "base/result.h"

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sevemu::qmp {

using Json = nlohmann::json;

// QEMU's error classes (qapi/error.json): GenericError, CommandNotFound, DeviceNotActive,
// DeviceNotFound, KVMMissingCap.
struct Error {
    std::string error_class;
    std::string desc;
};
Error generic_error(std::string desc);

using Handler = std::function<Result<Json, Error>(Json const& arguments)>;

// The commands a server answers. Handlers run on the server's thread; a handler that touches
// the machine marshals the call to the machine's thread itself.
class CommandTable {
public:
    void add(std::string name, Handler handler);
    Handler const* find(std::string_view name) const;
    std::vector<std::string> names() const;

private:
    std::map<std::string, Handler, std::less<>> m_handlers;
};

// Argument helpers that give QEMU's messages for missing or mistyped parameters.
Result<std::string, Error> arg_string(Json const& args, char const* name);
Result<std::optional<std::string>, Error> arg_opt_string(Json const& args, char const* name);
Result<int64_t, Error> arg_int(Json const& args, char const* name);
Result<std::optional<int64_t>, Error> arg_opt_int(Json const& args, char const* name);
Result<std::optional<bool>, Error> arg_opt_bool(Json const& args, char const* name);

// One client's protocol state, independent of sockets so that it can be tested byte by byte.
class Session {
public:
    explicit Session(CommandTable const& commands);
    ~Session();
    std::string greeting() const;
    // Feed received bytes; returns the complete replies (each one JSON line ending in "\r\n").
    std::vector<std::string> feed(std::string_view bytes);
    bool negotiated() const { return m_negotiated; }
    bool wants_close() const { return m_close; }

private:
    std::string handle(std::string_view text);
    std::string reply_error(Error const& e, Json const* id) const;

    CommandTable const& m_commands;
    bool m_negotiated { false };
    bool m_close { false };
    // JSON stream splitter state (objects can arrive split or several per read).
    std::string m_buffer;
    int m_depth { 0 };
    bool m_in_string { false };
    bool m_escape { false };
    bool m_skipping { false }; // inside a text over the size limit: tracked, not buffered
};

std::string format_event(std::string_view name, Json const& data);

// Where a server listens: QEMU's "-qmp" syntax, "unix:PATH,server=on,wait=off" or
// "tcp:HOST:PORT,server=on,wait=off" (the older "server,nowait" spelling is accepted too).
struct Endpoint {
    enum class Kind { Unix, Tcp } kind { Kind::Unix };
    std::string path;       // Unix
    std::string host;       // Tcp
    uint16_t port {};       // Tcp; 0 picks a free port
    bool wait { false };    // wait=on: the machine waits for the first client before it starts
};
Result<Endpoint, std::string> parse_endpoint(std::string_view spec);

class Server {
public:
    static Result<std::unique_ptr<Server>, std::string> start(Endpoint const&, CommandTable const&);
    ~Server();
    Server(Server const&) = delete;
    Server& operator=(Server const&) = delete;

    // Sends an event to every client that has completed negotiation. Thread-safe.
    void emit(std::string_view name, Json const& data);
    // The TCP port actually bound (useful with port 0).
    uint16_t port() const;
    // Blocks until a client has connected (for wait=on).
    void wait_for_client();
    void stop();

    struct Impl;

private:
    explicit Server(std::unique_ptr<Impl>);
    std::unique_ptr<Impl> m_impl;
};

} // namespace sevemu::qmp
