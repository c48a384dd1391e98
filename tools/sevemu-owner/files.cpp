#include "tools/sevemu-owner/owner.h"

#include <fstream>
#include <iterator>
#include <system_error>

namespace sevemu::owner {

// Input files here are certificates, keys and secrets: a few KiB. The cap keeps a mistaken path
// (a disk image, /dev/zero) from exhausting memory.
static constexpr std::uintmax_t kMaxInputFile = 16u << 20;

OwnerResult<Bytes> read_file(std::filesystem::path const& path)
{
    std::error_code ec;
    auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(status))
        return make_unexpected(OwnerError { "cannot read " + path.string() + ": no such file" });
    if (std::filesystem::is_directory(status))
        return make_unexpected(OwnerError { "cannot read " + path.string() + ": is a directory" });
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return make_unexpected(OwnerError { "cannot open " + path.string() });
    Bytes out;
    char buf[4096];
    while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
        out.insert(out.end(), buf, buf + in.gcount());
        if (out.size() > kMaxInputFile)
            return make_unexpected(OwnerError { path.string() + ": file too large" });
    }
    if (in.bad())
        return make_unexpected(OwnerError { "error reading " + path.string() });
    return out;
}

OwnerResult<void> write_file(std::filesystem::path const& path, std::span<const uint8_t> data)
{
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out)
        return make_unexpected(OwnerError { "cannot create " + path.string() });
    out.write(reinterpret_cast<char const*>(data.data()), std::streamsize(data.size()));
    out.close();
    if (!out)
        return make_unexpected(OwnerError { "error writing " + path.string() });
    return {};
}

OwnerResult<Key128> read_key_file(std::filesystem::path const& path)
{
    Bytes b = TRY(read_file(path));
    if (b.size() != 16)
        return make_unexpected(
            OwnerError { path.string() + ": a key file holds 16 bytes, this one has " + std::to_string(b.size()) });
    Key128 k;
    std::copy(b.begin(), b.end(), k.begin());
    secure_zero(b.data(), b.size());
    return k;
}

} // namespace sevemu::owner
