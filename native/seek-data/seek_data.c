/*
 * lseek(2) for node: Node's fs API has no way to pass SEEK_DATA/SEEK_HOLE,
 * which is how we find the data extents of a sparse image without reading it
 * (and without mistaking zero-filled data blocks for holes).
 *
 * Exports:
 *   lseek(fd, offset, whence) -> new offset, or -1 when the kernel says ENXIO
 *     (no data/hole at or after offset); any other failure throws an Error
 *     whose `code` is the errno name (e.g. "EINVAL" when the file system does
 *     not support SEEK_DATA/SEEK_HOLE).
 *   SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE: the platform's values.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>

#define CHECK(env, call)                                                  \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error((env), NULL, "seek_data: N-API call failed: " #call); \
      return NULL;                                                        \
    }                                                                     \
  } while (0)

static const char *errno_name(int err) {
  switch (err) {
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case EOVERFLOW: return "EOVERFLOW";
    case ESPIPE: return "ESPIPE";
    case ENXIO: return "ENXIO";
    case EIO: return "EIO";
    default: return "EUNKNOWN";
  }
}

static napi_value js_lseek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 3) {
    napi_throw_type_error(env, NULL, "lseek(fd, offset, whence) takes three numbers");
    return NULL;
  }
  int32_t fd, whence;
  int64_t offset;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int32(env, argv[2], &whence) != napi_ok) {
    napi_throw_type_error(env, NULL, "lseek(fd, offset, whence) takes three numbers");
    return NULL;
  }

  off_t r = lseek(fd, (off_t)offset, whence);
  napi_value result;
  if (r == (off_t)-1) {
    int err = errno;
    if (err == ENXIO) {
      /* Not a failure: there is no more data (or hole) past offset. */
      CHECK(env, napi_create_int64(env, -1, &result));
      return result;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "lseek(fd %d, %lld, whence %d) failed: %s",
             fd, (long long)offset, whence, strerror(err));
    napi_throw_error(env, errno_name(err), msg);
    return NULL;
  }
  CHECK(env, napi_create_int64(env, (int64_t)r, &result));
  return result;
}

static napi_value set_int(napi_env env, napi_value obj, const char *name, int64_t v) {
  napi_value n;
  CHECK(env, napi_create_int64(env, v, &n));
  CHECK(env, napi_set_named_property(env, obj, name, n));
  return obj;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  CHECK(env, napi_create_function(env, "lseek", NAPI_AUTO_LENGTH, js_lseek, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "lseek", fn));
  if (!set_int(env, exports, "SEEK_SET", SEEK_SET)) return NULL;
  if (!set_int(env, exports, "SEEK_CUR", SEEK_CUR)) return NULL;
  if (!set_int(env, exports, "SEEK_END", SEEK_END)) return NULL;
  if (!set_int(env, exports, "SEEK_DATA", SEEK_DATA)) return NULL;
  if (!set_int(env, exports, "SEEK_HOLE", SEEK_HOLE)) return NULL;
  return exports;
}
