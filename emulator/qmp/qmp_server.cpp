// The QMP server's sockets: Boost.Asio on one thread of its own, error_code overloads only
// (no exceptions escape). Unix and TCP listeners share one generic stream-socket path.
#include "emulator/qmp/qmp.h"

#include <atomic>
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
    Connection(Proto::socket s, CommandTable const& commands, asio::io_context& io)
        : socket(std::move(s))
        , session(commands)
        , stall_timer(io)
    {
    }
    Proto::socket socket;
    Session session;
    std::array<char, 4096> buffer {};
    std::deque<std::string> out;
    size_t out_offset { 0 };  // bytes of out.front() already written
    size_t queued { 0 };      // bytes waiting in `out`
    bool writing { false };
    bool reading { false };
    bool read_paused { false };
    bool closed { false };
    bool closing { false }; // close once the queued output is written
    asio::steady_timer stall_timer;
};

struct Server::Impl {
    asio::io_context io;
    std::optional<asio::basic_socket_acceptor<Proto>> acceptor;
    std::thread thread;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    std::optional<asio::steady_timer> stop_timer;
    CommandTable const* commands {};
    ServerLimits limits;
    Endpoint endpoint;
    uint16_t bound_port {};
    std::list<std::shared_ptr<Connection>> connections; // touched only on the io thread
    std::mutex mutex;
    std::condition_variable cv;
    bool had_client { false };
    bool stopped { false };
    std::atomic<bool> stop_requested { false };
    bool io_done { false }; // under mutex: the io thread has returned from run()

    void accept();
    void read(std::shared_ptr<Connection> const& c);
    void send(std::shared_ptr<Connection> const& c, std::string text);
    void flush(std::shared_ptr<Connection> const& c);
    void arm_stall_timer(std::shared_ptr<Connection> const& c);
    void close(std::shared_ptr<Connection> const& c);
};

void Server::Impl::accept()
{
    acceptor->async_accept([this](boost::system::error_code ec, Proto::socket socket) {
        if (ec) {
            if (ec != asio::error::operation_aborted && !stopped)
                accept();
            return;
        }
        auto c = std::make_shared<Connection>(std::move(socket), *commands, io);
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

void Server::Impl::read(std::shared_ptr<Connection> const& c)
{
    if (c->closed || c->closing || c->reading || c->session.wants_close())
        return;
    // Back-pressure: a client that does not take its replies is not read from (QEMU suspends
    // a monitor with requests pending, monitor/qmp.c), so sending alone cannot grow the queue.
    if (c->queued > limits.pause_reading_at) {
        c->read_paused = true;
        return;
    }
    c->read_paused = false;
    c->reading = true;
    c->socket.async_read_some(asio::buffer(c->buffer), [this, c](boost::system::error_code ec, size_t n) {
        c->reading = false;
        if (ec || c->closed) {
            close(c);
            return;
        }
        for (auto& reply : c->session.feed(std::string_view(c->buffer.data(), n))) {
            send(c, std::move(reply));
            if (c->closed)
                return;
        }
        // After "quit" the reply goes out and nothing more is read; the owner stops the server.
        read(c);
    });
}

void Server::Impl::send(std::shared_ptr<Connection> const& c, std::string text)
{
    if (c->closed)
        return;
    // A bounded queue: a client that lets it overflow is disconnected, never waited for.
    if (c->queued + text.size() > limits.max_queued_output) {
        close(c);
        return;
    }
    c->queued += text.size();
    c->out.push_back(std::move(text));
    if (!c->writing)
        flush(c);
}

void Server::Impl::arm_stall_timer(std::shared_ptr<Connection> const& c)
{
    // A client that has output waiting and takes none of it for `stalled_for` is cut off.
    c->stall_timer.expires_after(limits.stalled_for);
    c->stall_timer.async_wait([this, c](boost::system::error_code ec) {
        if (!ec && !c->closed && c->writing)
            close(c);
    });
}

void Server::Impl::flush(std::shared_ptr<Connection> const& c)
{
    if (c->closed)
        return;
    if (c->out.empty()) {
        c->writing = false;
        c->stall_timer.cancel();
        if (c->closing)
            close(c);
        return;
    }
    if (!c->writing) {
        c->writing = true;
        arm_stall_timer(c);
    }
    auto const& front = c->out.front();
    c->socket.async_write_some(asio::buffer(front.data() + c->out_offset, front.size() - c->out_offset),
        [this, c](boost::system::error_code ec, size_t n) {
            if (ec || c->closed) {
                close(c);
                return;
            }
            c->queued -= n;
            c->out_offset += n;
            if (c->out_offset == c->out.front().size()) {
                c->out.pop_front();
                c->out_offset = 0;
            }
            if (n > 0)
                arm_stall_timer(c); // progress
            flush(c);
            if (c->read_paused && c->queued <= limits.pause_reading_at)
                read(c);
        });
}

void Server::Impl::close(std::shared_ptr<Connection> const& c)
{
    if (c->closed)
        return;
    c->closed = true;
    c->stall_timer.cancel();
    boost::system::error_code ignored;
    c->socket.shutdown(asio::socket_base::shutdown_both, ignored);
    c->socket.close(ignored);
    c->out.clear();
    c->queued = 0;
    connections.remove(c);
}

Server::Server(std::shared_ptr<Impl> impl) : m_impl(std::move(impl)) {}

Result<std::unique_ptr<Server>, std::string> Server::start(Endpoint const& ep, CommandTable const& commands, ServerLimits const& limits)
{
    auto impl = std::make_shared<Impl>();
    impl->commands = &commands;
    impl->limits = limits;
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
    // The thread shares the Impl: should stop() ever have to leave it behind (a handler that
    // never returns), it still runs on valid memory.
    impl->thread = std::thread([impl] {
        impl->io.run();
        {
            std::lock_guard lock(impl->mutex);
            impl->io_done = true;
        }
        impl->cv.notify_all();
    });
    return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::~Server() { stop(); }

void Server::stop()
{
    if (!m_impl || m_impl->stop_requested.exchange(true))
        return;
    auto impl = m_impl;
    // Stop accepting; give every client up to stop_grace to receive what is queued for it (a
    // SHUTDOWN event, the reply to "quit"), then cut off whoever is left and end the io thread.
    // Nothing here waits for a client: a client that never reads costs stop_grace, no more.
    asio::post(impl->io, [impl] {
        impl->stopped = true;
        boost::system::error_code ignored;
        impl->acceptor->close(ignored);
        for (auto& c : std::list(impl->connections)) {
            if (c->out.empty())
                impl->close(c);
            else
                c->closing = true;
        }
        impl->work.reset();
        impl->stop_timer.emplace(impl->io);
        impl->stop_timer->expires_after(impl->limits.stop_grace);
        impl->stop_timer->async_wait([impl](boost::system::error_code) {
            for (auto& c : std::list(impl->connections))
                impl->close(c);
            impl->io.stop();
        });
    });
    {
        std::unique_lock lock(impl->mutex);
        auto deadline = std::chrono::steady_clock::now() + impl->limits.stop_grace + std::chrono::milliseconds(500);
        if (!impl->cv.wait_until(lock, deadline, [&] { return impl->io_done; })) {
            // The io thread is inside a handler that does not return (a command waiting on a
            // machine that will not answer): leave it behind rather than hang the process.
            lock.unlock();
            impl->io.stop();
            lock.lock();
            impl->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return impl->io_done; });
        }
    }
    {
        std::lock_guard lock(impl->mutex);
        if (impl->io_done) {
            if (impl->thread.joinable())
                impl->thread.join();
        } else if (impl->thread.joinable()) {
            impl->thread.detach();
        }
        impl->stopped = true;
        impl->had_client = true; // release anyone still waiting
    }
    if (impl->endpoint.kind == Endpoint::Kind::Unix)
        ::unlink(impl->endpoint.path.c_str());
    impl->cv.notify_all();
}

void Server::emit(std::string_view name, Json const& data)
{
    std::string text = format_event(name, data);
    // A weak reference: a post that is never run (the server stopped first) must not keep the
    // server alive through its own queue.
    asio::post(m_impl->io, [weak = std::weak_ptr<Impl>(m_impl), text = std::move(text)] {
        auto impl = weak.lock();
        if (!impl)
            return;
        for (auto& c : std::list(impl->connections))
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
