// Integration tests: connect to a Unix socket a just-started sevemu will create, retrying while
// it starts (QMP `-qmp unix:PATH,server=on,wait=off`).
#pragma once

#include <chrono>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace sevemu::testing {

// Tries every 25 ms for `tries` attempts; the connected fd has a receive timeout of
// `recv_timeout_s` seconds (so a silent server fails the test instead of hanging it), or -1.
inline int connect_unix(std::string const& path, int tries, int recv_timeout_s)
{
    for (int i = 0; i < tries; ++i) {
        int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        if (::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
            timeval tv { recv_timeout_s, 0 };
            ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            return s;
        }
        ::close(s);
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return -1;
}

} // namespace sevemu::testing
