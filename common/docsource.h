/*
 * docsource.h - documents from one input: a file, standard input ("-"), or
 * an archive (tar, cpio, zip, ar; optionally compressed with any filter
 * libarchive knows), in which each regular file is a document named by its
 * path.  A lone compressed file (notes.txt.gz) is one document.  Everything
 * is read as a stream: nothing seeks, so pipes work and memory stays small.
 *
 * Ownership: the source owns its file descriptor and archive handle; a name
 * returned by fm_docsrc_next() is valid until the next call.
 */
#ifndef FM_DOCSOURCE_H
#define FM_DOCSOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "fm_error.h"

struct fm_docsrc;

/* Opens path ("-" = standard input) and finds out what it holds.  FM_EIO or FM_EDATA on failure. */
struct fm_docsrc *fm_docsrc_open(const char *path, struct fm_err *err);

/* Whether the input is an archive (names are member paths) or a single document. */
bool fm_docsrc_is_archive(const struct fm_docsrc *s);

/*
 * Moves to the next document and sets *name.  Returns FM_OK, FM_ENORESULT
 * when there are no more, or an error (a damaged archive is FM_EDATA).
 */
int fm_docsrc_next(struct fm_docsrc *s, const char **name, struct fm_err *err);

/* Reads up to cap bytes of the current document: the count, 0 at its end, -1 on error (err filled). */
ssize_t fm_docsrc_read(struct fm_docsrc *s, void *buf, size_t cap, struct fm_err *err);

void fm_docsrc_close(struct fm_docsrc *s);

#endif
