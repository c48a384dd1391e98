// The owner's files go through base/file_io.h: regular files only, a limit per kind of file,
// and outputs written atomically (a command with several outputs writes all or none).
#include "tools/sevemu-owner/owner.h"

#include "base/file_io.h"

namespace sevemu::owner {

OwnerResult<Bytes> read_file(std::filesystem::path const& path, uint64_t max_size)
{
    auto r = read_regular_file(path, max_size);
    if (!r)
        return make_unexpected(OwnerError { std::move(r).error().message });
    return std::move(*r);
}

OwnerResult<void> write_files(std::vector<OutputFile> const& files)
{
    auto r = write_files_atomic(files);
    if (!r)
        return make_unexpected(OwnerError { std::move(r).error().message });
    return {};
}

OwnerResult<Key128> read_key_file(std::filesystem::path const& path)
{
    Bytes b = TRY(read_file(path, file_limits::kKey128));
    if (b.size() != 16)
        return make_unexpected(
            OwnerError { path.string() + ": a key file holds 16 bytes, this one has " + std::to_string(b.size()) });
    Key128 k;
    std::copy(b.begin(), b.end(), k.begin());
    secure_zero(b.data(), b.size());
    return k;
}

} // namespace sevemu::owner
