// QMP client over a unix socket (see qmp_client.h).
#include "emulator/qmp/qmp_client.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace sevemu::qmp {

using Clock = std::chrono::steady_clock;

Client::Client() : m_events(std::make_unique<std::vector<Json>>()) {}
Client::Client(Client&& o) noexcept : m_fd(o.m_fd), m_pending(std::move(o.m_pending)), m_events(std::move(o.m_events)) { o.m_fd = -1; }
Client& Client::operator=(Client&& o) noexcept
{
    std::swap(m_fd, o.m_fd);
    std::swap(m_pending, o.m_pending);
    std::swap(m_events, o.m_events);
    return *this;
}
Client::~Client()
{
    if (m_fd >= 0)
        ::close(m_fd);
}

Result<Client, std::string> Client::connect_unix(std::string const& path, std::chrono::milliseconds wait)
{
    sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path)
        return make_unexpected("QMP socket path too long: " + path);
    std::memcpy(sa.sun_path, path.c_str(), path.size());
    Client c;
    auto deadline = Clock::now() + wait;
    while (true) {
        int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return make_unexpected(std::string("socket: ") + std::strerror(errno));
        if (::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
            c.m_fd = s;
            break;
        }
        int err = errno;
        ::close(s);
        if (Clock::now() > deadline)
            return make_unexpected("cannot connect to " + path + ": " + std::strerror(err));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto greeting = c.read_message(std::chrono::seconds(10));
    if (!greeting)
        return make_unexpected(greeting.error());
    if (!greeting->contains("QMP"))
        return make_unexpected("not a QMP greeting: " + greeting->dump());
    auto caps = c.execute("qmp_capabilities");
    if (!caps)
        return make_unexpected("qmp_capabilities: " + caps.error().desc);
    return c;
}

Result<Json, std::string> Client::read_message(std::chrono::milliseconds timeout)
{
    auto deadline = Clock::now() + timeout;
    while (true) {
        auto nl = m_pending.find('\n');
        if (nl != std::string::npos) {
            std::string line = m_pending.substr(0, nl);
            m_pending.erase(0, nl + 1);
            if (line.find_first_not_of(" \r\t") == std::string::npos)
                continue;
            auto j = Json::parse(line, nullptr, false);
            if (j.is_discarded())
                return make_unexpected("malformed QMP message: " + line);
            return j;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0)
            return make_unexpected(std::string("timed out waiting for QMP"));
        pollfd p { m_fd, POLLIN, 0 };
        int r = ::poll(&p, 1, int(left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        char buf[65536];
        ssize_t n = ::read(m_fd, buf, sizeof buf);
        if (n <= 0)
            return make_unexpected(std::string("QMP connection closed"));
        m_pending.append(buf, size_t(n));
    }
}

Result<Json, Error> Client::execute(std::string const& name) { return execute(name, Json::object()); }

Result<Json, Error> Client::execute(std::string const& name, Json const& arguments)
{
    Json req = { { "execute", name } };
    if (!arguments.empty())
        req["arguments"] = arguments;
    std::string text = req.dump() + "\n";
    for (size_t off = 0; off < text.size();) {
        ssize_t n = ::write(m_fd, text.data() + off, text.size() - off);
        if (n <= 0)
            return make_unexpected(Error { "Transport", std::string("QMP write: ") + std::strerror(errno) });
        off += size_t(n);
    }
    while (true) {
        auto m = read_message(std::chrono::seconds(120));
        if (!m)
            return make_unexpected(Error { "Transport", m.error() });
        if (m->contains("event")) {
            m_events->push_back(*m);
            continue;
        }
        if (m->contains("return"))
            return (*m)["return"];
        if (m->contains("error"))
            return make_unexpected(Error { (*m)["error"].value("class", ""), (*m)["error"].value("desc", "") });
        return make_unexpected(Error { "Transport", "unexpected QMP message: " + m->dump() });
    }
}

Result<Json, std::string> Client::wait_event(std::string const& name, std::chrono::milliseconds timeout)
{
    for (auto const& e : *m_events)
        if (e.value("event", "") == name)
            return e;
    auto deadline = Clock::now() + timeout;
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
            return make_unexpected("no " + name + " event");
        auto m = read_message(left);
        if (!m)
            return make_unexpected(m.error());
        if (m->contains("event")) {
            m_events->push_back(*m);
            if ((*m)["event"] == name)
                return *m;
        }
    }
}

std::vector<Json> const& Client::events() const { return *m_events; }

} // namespace sevemu::qmp
