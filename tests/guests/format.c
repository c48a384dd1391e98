/* sevemu test guests — printf subset shared by the guest and the native build. */
#include "guest.h"

static int emit_padded(const char* s, int len, int width, int left, char pad)
{
    int n = 0;
    if (!left)
        for (; width > len; --width, ++n)
            guest_putc(pad);
    for (int i = 0; i < len; ++i, ++n)
        guest_putc(s[i]);
    if (left)
        for (; width > len; --width, ++n)
            guest_putc(' ');
    return n;
}

int guest_vprintf(const char* fmt, va_list ap)
{
    int n = 0;
    for (; *fmt; ++fmt) {
        if (*fmt != '%') {
            guest_putc(*fmt);
            ++n;
            continue;
        }
        ++fmt;
        int left = 0;
        char pad = ' ';
        for (;; ++fmt) {
            if (*fmt == '-')
                left = 1;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        int width = 0;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        int longs = 0;
        while (*fmt == 'l' || *fmt == 'z') {
            longs += *fmt == 'z' ? 2 : 1;
            ++fmt;
        }
        char buf[24];
        int len = 0;
        switch (*fmt) {
        case 'd':
        case 'i': {
            long long v = longs >= 2 ? va_arg(ap, long long) : longs == 1 ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            char tmp[24];
            int t = 0;
            do {
                tmp[t++] = (char)('0' + u % 10);
                u /= 10;
            } while (u);
            if (v < 0) {
                if (pad == '0' && width > 0) {
                    guest_putc('-');
                    ++n;
                    --width;
                } else {
                    buf[len++] = '-';
                }
            }
            while (t)
                buf[len++] = tmp[--t];
            n += emit_padded(buf, len, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long u = longs >= 2 ? va_arg(ap, unsigned long long)
                : longs == 1                  ? va_arg(ap, unsigned long)
                                              : va_arg(ap, unsigned);
            unsigned base = *fmt == 'u' ? 10 : 16;
            const char* digits = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
            char tmp[24];
            int t = 0;
            do {
                tmp[t++] = digits[u % base];
                u /= base;
            } while (u);
            while (t)
                buf[len++] = tmp[--t];
            n += emit_padded(buf, len, width, left, pad);
            break;
        }
        case 'c':
            buf[0] = (char)va_arg(ap, int);
            n += emit_padded(buf, 1, width, left, ' ');
            break;
        case 's': {
            const char* s = va_arg(ap, const char*);
            if (!s)
                s = "(null)";
            n += emit_padded(s, (int)strlen(s), width, left, ' ');
            break;
        }
        case '%':
            guest_putc('%');
            ++n;
            break;
        default:
            return -1;
        }
    }
    return n;
}

int guest_printf(const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = guest_vprintf(fmt, ap);
    va_end(ap);
    return n;
}
