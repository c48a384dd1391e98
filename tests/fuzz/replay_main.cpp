// sevemu fuzzing — the replay driver: main() for a harness built without libFuzzer (the normal
// g++ build and the sanitizer build). Every argument is an input file or a directory of inputs
// (seed corpus, regressions); each input is run once through LLVMFuzzerTestOneInput, in sorted
// order so that a failure is reproducible. A property failure aborts (fuzz_check.h), which fails
// the meson test; the input being run is printed first so the failure names it.
//
// A directory that does not exist is reported and skipped (git keeps no empty directories, and
// the public AMD vectors beside the project may be absent).
#include "fuzz_check.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace fs = std::filesystem;

int main(int argc, char** argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        fs::path p(argv[i]);
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            size_t before = inputs.size();
            for (auto const& e : fs::recursive_directory_iterator(p, ec))
                if (e.is_regular_file())
                    inputs.push_back(e.path());
            std::sort(inputs.begin() + long(before), inputs.end());
            std::printf("%s: %zu inputs\n", p.c_str(), inputs.size() - before);
        } else if (fs::is_regular_file(p, ec)) {
            inputs.push_back(p);
        } else {
            std::printf("%s: absent, skipped\n", p.c_str());
        }
    }
    auto t0 = std::chrono::steady_clock::now();
    size_t bytes = 0;
    for (auto const& p : inputs) {
        std::ifstream in(p, std::ios::binary);
        std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (!in.eof() && in.fail()) {
            std::fprintf(stderr, "%s: cannot read\n", p.c_str());
            return 1;
        }
        std::fprintf(stderr, "running %s (%zu bytes)\n", p.c_str(), data.size());
        // A copy in its own allocation, as libFuzzer passes it: ASan sees any read past the end.
        std::unique_ptr<uint8_t[]> copy(new uint8_t[data.size() ? data.size() : 1]);
        std::copy(data.begin(), data.end(), copy.get());
        LLVMFuzzerTestOneInput(copy.get(), data.size());
        bytes += data.size();
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("replayed %zu inputs (%zu bytes) in %.0f ms, every property held\n", inputs.size(), bytes, ms);
    return 0;
}
