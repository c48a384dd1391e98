// The sanitizer build's own check (tests/sanitizer/meson.build): one real defect of the kind each
// sanitizer reports, chosen by argv[1]. The tests run it as a child whose exit status is
// ignored, and expect the test to fail all the same (scripts/sanitizer-test.sh).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace {
[[gnu::noinline]] int add(int a, int b) { return a + b; }
}

int main(int argc, char** argv)
{
    if (argc < 2) return 2;
    if (std::strcmp(argv[1], "ubsan") == 0) {
        volatile int big = std::numeric_limits<int>::max();
        std::printf("%d\n", add(big, 1)); // signed overflow
        return 0;
    }
    if (std::strcmp(argv[1], "asan") == 0) {
        char* p = static_cast<char*>(std::malloc(16));
        volatile int at = 16;
        p[at] = 1; // heap buffer overflow by one
        std::free(p);
        return 0;
    }
    if (std::strcmp(argv[1], "lsan") == 0) {
        void* volatile p = std::malloc(64);
        p = nullptr; // the only pointer is gone: a leak at exit
        return 0;
    }
    return 2;
}
