// sevemu — a QMP client (the other side of qmp.h): connects to a QMP unix socket, negotiates
// capabilities and executes commands, keeping the events that arrive in between. Used by
// `make demo` and the end-to-end tests to drive `sevemu` exactly as any QMP client would.
#pragma once

#include "base/result.h"
#include "emulator/qmp/qmp.h"

#include <chrono>
#include <string>
#include <vector>

namespace sevemu::qmp {

class Client {
public:
    // Connects (retrying until `wait` has passed: the server may still be starting), reads the
    // greeting and sends qmp_capabilities.
    static Result<Client, std::string> connect_unix(std::string const& path,
        std::chrono::milliseconds wait = std::chrono::seconds(20));
    Client(Client&&) noexcept;
    Client& operator=(Client&&) noexcept;
    ~Client();

    // {"execute": name, "arguments": args}: the "return" value, or the server's error (class
    // and description) as an Error; a transport failure is an Error with class "Transport".
    Result<Json, Error> execute(std::string const& name, Json const& arguments);
    Result<Json, Error> execute(std::string const& name);
    // Waits for an event with this name (or returns one already received).
    Result<Json, std::string> wait_event(std::string const& name, std::chrono::milliseconds timeout);
    std::vector<Json> const& events() const;

private:
    Client();
    Result<Json, std::string> read_message(std::chrono::milliseconds timeout);
    int m_fd { -1 };
    std::string m_pending;
    std::unique_ptr<std::vector<Json>> m_events;
};

} // namespace sevemu::qmp
