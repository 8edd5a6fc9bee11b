// A tiny C wrapper over libpng and libjpeg(-turbo). libpng and libjpeg report fatal errors by
// calling an error handler that must not return; ours record the message and longjmp back to
// the entry point, which frees everything and returns a status code. Nothing aborts or prints.

#include "cimageio.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <png.h>
#include <jpeglib.h>
#include <jerror.h>

/// The largest image we agree to decode (pixels: 8192 × 8192), so a hostile header cannot
/// exhaust memory.
#define CIO_MAX_PIXELS ((size_t)1 << 26)
/// A file of S bytes may declare at most CIO_MAX_RATIO · S + CIO_RATIO_SLACK bytes of RGB
/// pixels. Deflate cannot expand data more than 1032:1, and a JPEG spends at least about one
/// bit per 8×8 block and component (about 1024:1 for RGB), so no valid file comes near it;
/// a 100-byte file that declares 60000 × 60000 pixels is refused before anything is allocated.
#define CIO_MAX_RATIO ((size_t)2048)
#define CIO_RATIO_SLACK ((size_t)1 << 20)

/// Whether `width × height` RGB pixels are within the limits for a file of `file_size` bytes.
static int cio_dimensions_allowed(size_t width, size_t height, size_t file_size) {
    if (width == 0 || height == 0 || width > CIO_MAX_PIXELS || height > CIO_MAX_PIXELS) return 0;
    size_t pixels = width * height;
    if (pixels > CIO_MAX_PIXELS) return 0;
    return pixels * 3 <= CIO_MAX_RATIO * file_size + CIO_RATIO_SLACK;
}

static int fail(int status, char *message, size_t message_len, const char *format, ...) {
    if (message && message_len > 0) {
        va_list args;
        va_start(args, format);
        vsnprintf(message, message_len, format, args);
        va_end(args);
    }
    return status;
}

static int open_status(int error) { return error == ENOENT ? CIO_ERR_NOT_FOUND : CIO_ERR_OPEN; }

void cio_image_free(cio_image *image) {
    if (!image) return;
    free(image->pixels);
    image->pixels = NULL;
    image->width = 0;
    image->height = 0;
}

// MARK: - PNG

typedef struct {
    jmp_buf jump;
    char message[256];
} cio_png_error;

static void cio_png_error_fn(png_structp png, png_const_charp text) {
    cio_png_error *error = (cio_png_error *)png_get_error_ptr(png);
    snprintf(error->message, sizeof error->message, "%s", text ? text : "libpng error");
    longjmp(error->jump, 1);
}

static void cio_png_warning_fn(png_structp png, png_const_charp text) {
    (void)png;
    (void)text;  // benign (e.g. an unknown ancillary chunk); fatal problems go through the error fn
}

static int read_png(FILE *fp, size_t file_size, cio_image *out, char *message, size_t message_len) {
    cio_png_error error;
    error.message[0] = 0;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, cio_png_error_fn, cio_png_warning_fn);
    if (!png) return fail(CIO_ERR_MEMORY, message, message_len, "libpng could not allocate a reader");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return fail(CIO_ERR_MEMORY, message, message_len, "libpng could not allocate an info struct");
    }
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    volatile int status = CIO_ERR_DECODE;
    if (setjmp(error.jump)) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        if (status == CIO_ERR_DECODE && strcmp(error.message, "Read Error") == 0) {
            return fail(status, message, message_len, "invalid PNG: unexpected end of file (truncated?)");
        }
        if (status == CIO_ERR_DECODE) return fail(status, message, message_len, "invalid PNG: %s", error.message);
        return fail(status, message, message_len, "%s", error.message);
    }
    png_init_io(png, fp);
    png_read_info(png, info);
    png_uint_32 width = png_get_image_width(png, info);
    png_uint_32 height = png_get_image_height(png, info);
    if (!cio_dimensions_allowed(width, height, file_size)) {
        status = CIO_ERR_MEMORY;
        snprintf(error.message, sizeof error.message,
                 "image too large: %u x %u pixels declared by a file of %zu bytes", (unsigned)width, (unsigned)height, file_size);
        longjmp(error.jump, 1);
    }
    png_set_expand(png);          // palette -> RGB, gray < 8 bit -> 8 bit, tRNS -> alpha
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((channels != 3 && channels != 4) || rowbytes < (size_t)width * channels) {
        png_error(png, "unsupported pixel layout after conversion");
    }
    pixels = malloc(rowbytes * height);
    rows = malloc(sizeof(png_bytep) * height);
    if (!pixels || !rows) {
        status = CIO_ERR_MEMORY;
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    // Pack to RGB8 in place (the write index never passes the read index), compositing alpha over white.
    uint8_t *p = pixels;
    for (png_uint_32 y = 0; y < height; y++) {
        const uint8_t *src = p + (size_t)y * rowbytes;
        uint8_t *dst = p + (size_t)y * width * 3;
        for (png_uint_32 x = 0; x < width; x++) {
            if (channels == 4) {
                unsigned a = src[4 * x + 3];
                for (int c = 0; c < 3; c++) {
                    dst[3 * x + c] = (uint8_t)((src[4 * x + c] * a + 255u * (255u - a) + 127u) / 255u);
                }
            } else {
                uint8_t r = src[3 * x], g = src[3 * x + 1], b = src[3 * x + 2];
                dst[3 * x] = r;
                dst[3 * x + 1] = g;
                dst[3 * x + 2] = b;
            }
        }
    }
    free(rows);
    rows = NULL;
    png_destroy_read_struct(&png, &info, NULL);
    out->pixels = p;
    out->width = (int32_t)width;
    out->height = (int32_t)height;
    return CIO_OK;
}

int cio_write_png(const char *path, const uint8_t *rgb, int32_t width, int32_t height,
                  char *message, size_t message_len) {
    return cio_write_png_text(path, rgb, width, height, NULL, NULL, 0, message, message_len);
}

static int is_ascii(const char *s) {
    for (; *s; s++) if ((unsigned char)*s > 0x7e || ((unsigned char)*s < 0x20 && *s != '\n')) return 0;
    return 1;
}

int cio_write_png_text(const char *path, const uint8_t *rgb, int32_t width, int32_t height,
                       const char *const *keys, const char *const *values, int32_t count,
                       char *message, size_t message_len) {
    if (!path || !rgb || width <= 0 || height <= 0 || count < 0 || (count > 0 && (!keys || !values))) {
        return fail(CIO_ERR_ARGUMENT, message, message_len, "invalid arguments to cio_write_png");
    }
    for (int32_t i = 0; i < count; i++) {
        size_t n = keys[i] ? strlen(keys[i]) : 0;
        if (n < 1 || n > 79 || !values[i]) {
            return fail(CIO_ERR_ARGUMENT, message, message_len, "a PNG text key must have 1 to 79 characters");
        }
    }
    png_textp text = NULL;
    if (count > 0) {
        text = calloc((size_t)count, sizeof(png_text));
        if (!text) return fail(CIO_ERR_MEMORY, message, message_len, "could not allocate text chunks");
        for (int32_t i = 0; i < count; i++) {
            text[i].compression = is_ascii(values[i]) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
            text[i].key = (png_charp)keys[i];
            text[i].text = (png_charp)values[i];
            text[i].text_length = strlen(values[i]);
            text[i].lang = NULL;
            text[i].lang_key = NULL;
        }
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) return fail(CIO_ERR_OPEN, message, message_len, "%s", strerror(errno));
    cio_png_error error;
    error.message[0] = 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, cio_png_error_fn, cio_png_warning_fn);
    if (!png) {
        fclose(fp);
        free(text);
        return fail(CIO_ERR_MEMORY, message, message_len, "libpng could not allocate a writer");
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        fclose(fp);
        free(text);
        return fail(CIO_ERR_MEMORY, message, message_len, "libpng could not allocate an info struct");
    }
    if (setjmp(error.jump)) {
        png_destroy_write_struct(&png, &info);
        fclose(fp);
        free(text);
        return fail(CIO_ERR_ENCODE, message, message_len, "PNG encoding failed: %s", error.message);
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (count > 0) png_set_text(png, info, text, count);
    png_write_info(png, info);
    for (int32_t y = 0; y < height; y++) png_write_row(png, rgb + (size_t)y * (size_t)width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(text);
    int write_error = ferror(fp);
    if (fclose(fp) != 0 || write_error) {
        return fail(CIO_ERR_ENCODE, message, message_len, "could not finish writing: %s", strerror(errno));
    }
    return CIO_OK;
}

// MARK: - JPEG

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} cio_jpeg_error;

static void cio_jpeg_error_exit(j_common_ptr cinfo) {
    cio_jpeg_error *error = (cio_jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, error->message);
    longjmp(error->jump, 1);
}

/// Silences libjpeg's messages, except that a truncated file (libjpeg would pad it with gray
/// and carry on) is treated as an error.
static void cio_jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) {
        cinfo->err->num_warnings++;
        if (cinfo->err->msg_code == JWRN_JPEG_EOF) cio_jpeg_error_exit(cinfo);
    }
}

static int read_jpeg(FILE *fp, size_t file_size, cio_image *out, char *message, size_t message_len) {
    struct jpeg_decompress_struct cinfo;
    cio_jpeg_error error;
    error.message[0] = 0;
    cinfo.err = jpeg_std_error(&error.pub);
    error.pub.error_exit = cio_jpeg_error_exit;
    error.pub.emit_message = cio_jpeg_emit_message;
    uint8_t *volatile pixels = NULL;
    volatile int status = CIO_ERR_DECODE;
    if (setjmp(error.jump)) {
        free(pixels);
        jpeg_destroy_decompress(&cinfo);
        if (status == CIO_ERR_DECODE) return fail(status, message, message_len, "invalid JPEG: %s", error.message);
        return fail(status, message, message_len, "%s", error.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, fp);
    jpeg_read_header(&cinfo, TRUE);
    // Refuse enormous declared sizes before libjpeg allocates anything for the image (a
    // progressive file's coefficient buffer covers the whole image).
    if (!cio_dimensions_allowed(cinfo.image_width, cinfo.image_height, file_size)) {
        status = CIO_ERR_MEMORY;
        snprintf(error.message, sizeof error.message, "image too large: %u x %u pixels declared by a file of %zu bytes",
                 (unsigned)cinfo.image_width, (unsigned)cinfo.image_height, file_size);
        longjmp(error.jump, 1);
    }
    // And bound libjpeg's own working memory (coefficient buffers, tables) by the same budget.
    cinfo.mem->max_memory_to_use = (long)(8 * (size_t)cinfo.image_width * cinfo.image_height + CIO_RATIO_SLACK);
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t width = cinfo.output_width, height = cinfo.output_height;
    if (cinfo.output_components != 3) {
        snprintf(error.message, sizeof error.message, "unsupported JPEG color space");
        longjmp(error.jump, 1);
    }
    pixels = malloc(width * height * 3);
    if (!pixels) {
        status = CIO_ERR_MEMORY;
        snprintf(error.message, sizeof error.message, "out of memory");
        longjmp(error.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * width * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->pixels = pixels;
    out->width = (int32_t)width;
    out->height = (int32_t)height;
    return CIO_OK;
}

int cio_write_jpeg(const char *path, const uint8_t *rgb, int32_t width, int32_t height,
                   int32_t quality, char *message, size_t message_len) {
    if (!path || !rgb || width <= 0 || height <= 0 || quality < 1 || quality > 100) {
        return fail(CIO_ERR_ARGUMENT, message, message_len, "invalid arguments to cio_write_jpeg");
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) return fail(CIO_ERR_OPEN, message, message_len, "%s", strerror(errno));
    struct jpeg_compress_struct cinfo;
    cio_jpeg_error error;
    error.message[0] = 0;
    cinfo.err = jpeg_std_error(&error.pub);
    error.pub.error_exit = cio_jpeg_error_exit;
    error.pub.emit_message = cio_jpeg_emit_message;
    if (setjmp(error.jump)) {
        jpeg_destroy_compress(&cinfo);
        fclose(fp);
        return fail(CIO_ERR_ENCODE, message, message_len, "JPEG encoding failed: %s", error.message);
    }
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, fp);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * (size_t)width * 3);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    int write_error = ferror(fp);
    if (fclose(fp) != 0 || write_error) {
        return fail(CIO_ERR_ENCODE, message, message_len, "could not finish writing: %s", strerror(errno));
    }
    return CIO_OK;
}

// MARK: - Dispatch

int cio_read_image(const char *path, cio_image *out, char *message, size_t message_len) {
    if (!path || !out) return fail(CIO_ERR_ARGUMENT, message, message_len, "invalid arguments to cio_read_image");
    out->pixels = NULL;
    out->width = 0;
    out->height = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        int error = errno;
        return fail(open_status(error), message, message_len, "%s", strerror(error));
    }
    struct stat info;
    if (fstat(fileno(fp), &info) != 0) {
        int error = errno;
        fclose(fp);
        return fail(CIO_ERR_OPEN, message, message_len, "%s", strerror(error));
    }
    if (S_ISDIR(info.st_mode)) {
        fclose(fp);
        return fail(CIO_ERR_OPEN, message, message_len, "is a directory");
    }
    size_t file_size = S_ISREG(info.st_mode) && info.st_size > 0 ? (size_t)info.st_size : 0;
    unsigned char signature[8] = {0};
    size_t got = fread(signature, 1, sizeof signature, fp);
    int status;
    if (got == 8 && png_sig_cmp(signature, 0, 8) == 0) {
        rewind(fp);
        status = read_png(fp, file_size, out, message, message_len);
    } else if (got >= 3 && signature[0] == 0xFF && signature[1] == 0xD8 && signature[2] == 0xFF) {
        rewind(fp);
        status = read_jpeg(fp, file_size, out, message, message_len);
    } else {
        status = fail(CIO_ERR_FORMAT, message, message_len,
                      got == 0 ? "the file is empty" : "not a PNG or JPEG file (unrecognised signature)");
    }
    fclose(fp);
    return status;
}
