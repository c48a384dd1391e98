// sevemu — QMP, the QEMU Machine Protocol, server side (INTERFACES.md §4).
// The wire protocol is QEMU's: a greeting, capabilities negotiation with "qmp_capabilities",
// then {"execute": NAME, "arguments": {...}, "id": ...} answered by {"return": ...} or
// {"error": {"class": ..., "desc": ...}}, and asynchronous events. Any QMP client works.
//
// Only nlohmann's forward header is included here; Boost.Asio stays inside qmp_server.cpp.
#pragma once

#include "base/result.h"

#include <nlohmann/json_fwd.hpp>

#include <chrono>
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

// A command's declared arguments, checked in one place (Session) before its handler runs, with
// the texts of QEMU's QAPI input visitor (qapi/qobject-input-visitor.c). Types are QAPI's:
// 'int' (int64), 'uint64' (negative integers are taken modulo 2^64, as QEMU does), 'str', 'bool',
// and a list (['T']: checked to be an array here; its handler checks the elements).
enum class ArgType : uint8_t { Int, Uint64, String, Bool, Array };
struct ArgSpec {
    char const* name;
    ArgType type;
    bool required;
};

// The commands a server answers. Handlers run on the server's thread; a handler that touches
// the machine marshals the call to the machine's thread itself. A handler sees only arguments
// its schema declares, of the declared types (uint64 ones as unsigned numbers).
class CommandTable {
public:
    struct Command {
        std::vector<ArgSpec> args;
        Handler handler;
    };
    // A command that takes no arguments.
    void add(std::string name, Handler handler);
    void add(std::string name, std::vector<ArgSpec> args, Handler handler);
    Command const* find(std::string_view name) const;
    std::vector<std::string> names() const;

private:
    std::map<std::string, Command, std::less<>> m_commands;
};

// Checks `args` against a schema: QEMU's error for the first member missing or of the wrong
// type (in declaration order), then for a member not declared. Returns the arguments as the
// handler sees them.
Result<Json, Error> check_arguments(std::vector<ArgSpec> const& schema, Json const& args);

// Argument helpers for handlers (after check_arguments they cannot fail); alone, they give
// QEMU's messages for missing or mistyped parameters.
Result<std::string, Error> arg_string(Json const& args, char const* name);
Result<std::optional<std::string>, Error> arg_opt_string(Json const& args, char const* name);
Result<int64_t, Error> arg_int(Json const& args, char const* name);
Result<std::optional<int64_t>, Error> arg_opt_int(Json const& args, char const* name);
Result<std::optional<uint64_t>, Error> arg_opt_uint64(Json const& args, char const* name);
Result<std::optional<bool>, Error> arg_opt_bool(Json const& args, char const* name);

class JsonStream;
struct JsonMessage;

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
    std::string handle(JsonMessage&& message);
    std::string reply_error(Error const& e, Json const* id) const;

    CommandTable const& m_commands;
    bool m_negotiated { false };
    bool m_close { false };
    // QEMU's JSON lexer, streamer and parser (qmp_json.h): texts may arrive split or several
    // per read; every byte is accounted to the text it belongs to, within QEMU's limits.
    std::unique_ptr<JsonStream> m_stream;
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

// What one client may cost the server. Replies wait in a per-client queue; while it holds more
// than `pause_reading_at` bytes the client's input is not read (as QEMU suspends a monitor that
// has requests pending), and a client whose queue passes `max_queued_output` or that has not
// taken any of a paused queue for `stalled_for` is disconnected: it can never block the machine
// or make the server's memory grow without bound. Input is bounded by the JSON limits.
struct ServerLimits {
    size_t pause_reading_at { 1 << 20 };
    size_t max_queued_output { 8 << 20 };
    std::chrono::milliseconds stalled_for { 10000 };
    // stop(): how long clients get to receive what is queued for them (the SHUTDOWN event, the
    // reply to "quit") before they are cut off.
    std::chrono::milliseconds stop_grace { 500 };
};

class Server {
public:
    static Result<std::unique_ptr<Server>, std::string> start(Endpoint const&, CommandTable const&,
        ServerLimits const& limits = {});
    ~Server();
    Server(Server const&) = delete;
    Server& operator=(Server const&) = delete;

    // Sends an event to every client that has completed negotiation. Thread-safe.
    void emit(std::string_view name, Json const& data);
    // The TCP port actually bound (useful with port 0).
    uint16_t port() const;
    // Blocks until a client has connected (for wait=on).
    void wait_for_client();
    // Returns within stop_grace plus a little, whatever the clients do.
    void stop();

    struct Impl;

private:
    explicit Server(std::shared_ptr<Impl>);
    std::shared_ptr<Impl> m_impl;
};

} // namespace sevemu::qmp
