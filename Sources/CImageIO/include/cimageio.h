#ifndef CIMAGEIO_H
#define CIMAGEIO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Result codes. Every function returns one of these and, on failure, writes a
/// NUL-terminated explanation into the caller's message buffer. Nothing aborts or prints.
typedef enum {
    CIO_OK = 0,
    CIO_ERR_NOT_FOUND = 1,   ///< the file does not exist (ENOENT)
    CIO_ERR_OPEN = 2,        ///< the file exists but could not be opened or created
    CIO_ERR_FORMAT = 3,      ///< neither a PNG nor a JPEG signature
    CIO_ERR_DECODE = 4,      ///< libpng/libjpeg rejected the data (truncated, corrupt)
    CIO_ERR_ENCODE = 5,      ///< writing failed (disk full, encoder error)
    CIO_ERR_MEMORY = 6,      ///< allocation failed or the image is too large
    CIO_ERR_ARGUMENT = 7     ///< invalid dimensions or null pointers
} cio_status;

/// An 8-bit RGB image, rows top to bottom, 3 bytes per pixel, no padding.
/// `pixels` is owned by the caller after a successful read; release it with cio_image_free.
typedef struct {
    uint8_t *pixels;
    int32_t width;
    int32_t height;
} cio_image;

/// Reads a PNG or JPEG file (chosen by its signature) into RGB8. Palette, grayscale and
/// 16-bit PNGs are converted; an alpha channel is composited over white.
int cio_read_image(const char *path, cio_image *out, char *message, size_t message_len);

/// Writes RGB8 pixels as a PNG at exactly `path` (the caller does temp + rename).
int cio_write_png(const char *path, const uint8_t *rgb, int32_t width, int32_t height,
                  char *message, size_t message_len);

/// As cio_write_png, with `count` text chunks: `keys[i]` (1–79 printable Latin-1 characters)
/// and `values[i]` (UTF-8). An ASCII value goes in a tEXt chunk, any other in an iTXt chunk
/// (UTF-8 by definition), both uncompressed, before the image data.
int cio_write_png_text(const char *path, const uint8_t *rgb, int32_t width, int32_t height,
                       const char *const *keys, const char *const *values, int32_t count,
                       char *message, size_t message_len);

/// Writes RGB8 pixels as a baseline JPEG of the given quality (1...100) at exactly `path`.
int cio_write_jpeg(const char *path, const uint8_t *rgb, int32_t width, int32_t height,
                   int32_t quality, char *message, size_t message_len);

/// Frees the pixels of an image returned by cio_read_image (safe on a zeroed image).
void cio_image_free(cio_image *image);

#ifdef __cplusplus
}
#endif

#endif
