// The QMP server's sockets: Boost.Asio on one thread of its own, error_code overloads only
// (no exceptions escape). Unix and TCP listeners share one generic stream-socket path.
#include "emulator/qmp/qmp.h"

#include <boost/asio.hpp>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unistd.h>

namespace sevemu::qmp {

namespace asio = boost::asio;
using Proto = asio::generic::stream_protocol;

struct Connection : std::enable_shared_from_this<Connection> {
    Connection(Proto::socket s, CommandTable const& commands) : socket(std::move(s)), session(commands) {}
    Proto::socket socket;
    Session session;
    std::array<char, 4096> buffer {};
    std::deque<std::string> out;
    bool closed { false };
    bool closing { false }; // close once the queued output is written
};

struct Server::Impl {
    asio::io_context io;
    std::optional<asio::basic_socket_acceptor<Proto>> acceptor;
    std::thread thread;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    CommandTable const* commands {};
    Endpoint endpoint;
    uint16_t bound_port {};
    std::list<std::shared_ptr<Connection>> connections; // touched only on the io thread
    std::mutex mutex;
    std::condition_variable cv;
    bool had_client { false };
    bool stopped { false };

    void accept();
    void read(std::shared_ptr<Connection> c);
    void send(std::shared_ptr<Connection> const& c, std::string text);
    void flush(std::shared_ptr<Connection> c);
    void close(std::shared_ptr<Connection> const& c);
};

void Server::Impl::accept()
{
    acceptor->async_accept([this](boost::system::error_code ec, Proto::socket socket) {
        if (ec) {
            if (ec != asio::error::operation_aborted)
                accept();
            return;
        }
        auto c = std::make_shared<Connection>(std::move(socket), *commands);
        connections.push_back(c);
        send(c, c->session.greeting());
        read(c);
        {
            std::lock_guard lock(mutex);
            had_client = true;
        }
        cv.notify_all();
        accept();
    });
}

void Server::Impl::read(std::shared_ptr<Connection> c)
{
    c->socket.async_read_some(asio::buffer(c->buffer), [this, c](boost::system::error_code ec, size_t n) {
        if (ec) {
            close(c);
            return;
        }
        for (auto& reply : c->session.feed(std::string_view(c->buffer.data(), n)))
            send(c, std::move(reply));
        if (c->session.wants_close()) {
            // "quit": the reply goes out, then the owner is told through its handler.
            return;
        }
        read(c);
    });
}

void Server::Impl::send(std::shared_ptr<Connection> const& c, std::string text)
{
    if (c->closed)
        return;
    bool idle = c->out.empty();
    c->out.push_back(std::move(text));
    if (idle)
        flush(c);
}

void Server::Impl::flush(std::shared_ptr<Connection> c)
{
    asio::async_write(c->socket, asio::buffer(c->out.front()), [this, c](boost::system::error_code ec, size_t) {
        if (ec) {
            close(c);
            return;
        }
        c->out.pop_front();
        if (!c->out.empty())
            flush(c);
        else if (c->closing)
            close(c);
    });
}

void Server::Impl::close(std::shared_ptr<Connection> const& c)
{
    if (c->closed)
        return;
    c->closed = true;
    boost::system::error_code ignored;
    c->socket.close(ignored);
    connections.remove(c);
}

Server::Server(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

Result<std::unique_ptr<Server>, std::string> Server::start(Endpoint const& ep, CommandTable const& commands)
{
    auto impl = std::make_unique<Impl>();
    impl->commands = &commands;
    impl->endpoint = ep;
    boost::system::error_code ec;
    Proto::endpoint gep;
    if (ep.kind == Endpoint::Kind::Unix) {
        // As QEMU does, a stale socket file from an earlier run is replaced.
        ::unlink(ep.path.c_str());
        gep = Proto::endpoint(asio::local::stream_protocol::endpoint(ep.path));
    } else {
        auto addr = asio::ip::make_address(ep.host, ec);
        if (ec)
            return make_unexpected("invalid QMP host '" + ep.host + "': " + ec.message());
        gep = Proto::endpoint(asio::ip::tcp::endpoint(addr, ep.port));
    }
    auto& acc = impl->acceptor.emplace(impl->io);
    if (acc.open(gep.protocol(), ec); ec)
        return make_unexpected("cannot open QMP socket: " + ec.message());
    if (ep.kind == Endpoint::Kind::Tcp)
        acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (acc.bind(gep, ec); ec)
        return make_unexpected("cannot bind QMP socket " + (ep.kind == Endpoint::Kind::Unix ? ep.path : ep.host + ":" + std::to_string(ep.port)) + ": " + ec.message());
    if (acc.listen(asio::socket_base::max_listen_connections, ec); ec)
        return make_unexpected("cannot listen on QMP socket: " + ec.message());
    if (ep.kind == Endpoint::Kind::Tcp) {
        auto local = acc.local_endpoint(ec);
        if (!ec) {
            auto const* sa = reinterpret_cast<sockaddr_in const*>(local.data());
            impl->bound_port = ntohs(sa->sin_port);
        }
    }
    impl->accept();
    impl->work.emplace(asio::make_work_guard(impl->io));
    Impl* raw = impl.get();
    impl->thread = std::thread([raw] { raw->io.run(); });
    return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() { stop(); }

void Server::stop()
{
    if (!m_impl || m_impl->stopped)
        return;
    m_impl->stopped = true;
    // Stop accepting; let every client receive what is queued for it (a SHUTDOWN event, the
    // reply to "quit"), then close. The io thread ends when nothing is left to do.
    asio::post(m_impl->io, [impl = m_impl.get()] {
        boost::system::error_code ignored;
        impl->acceptor->close(ignored);
        for (auto& c : std::list(impl->connections)) {
            if (c->out.empty())
                impl->close(c);
            else
                c->closing = true;
        }
        impl->work.reset();
    });
    if (m_impl->thread.joinable())
        m_impl->thread.join();
    if (m_impl->endpoint.kind == Endpoint::Kind::Unix)
        ::unlink(m_impl->endpoint.path.c_str());
    {
        std::lock_guard lock(m_impl->mutex);
        m_impl->had_client = true; // release anyone still waiting
    }
    m_impl->cv.notify_all();
}

void Server::emit(std::string_view name, Json const& data)
{
    std::string text = format_event(name, data);
    asio::post(m_impl->io, [impl = m_impl.get(), text = std::move(text)] {
        for (auto& c : impl->connections)
            if (c->session.negotiated())
                impl->send(c, text);
    });
}

uint16_t Server::port() const { return m_impl->bound_port; }

void Server::wait_for_client()
{
    std::unique_lock lock(m_impl->mutex);
    m_impl->cv.wait(lock, [&] { return m_impl->had_client; });
}

} // namespace sevemu::qmp
