// svgplot.h - a small SVG line / scatter chart writer for reports: series of
// (x, y) points with markers (and optional connecting lines), linear or log
// axes with 1-2-5 ticks, axis labels, a title and a legend.
//
//   struct gq_plot_series s[2] = {{"GPTVQ", n, x, y, true}, {"GPTQ", n2, x2, y2, true}};
//   struct gq_plot p = {.title = "...", .xlabel = "MB", .ylabel = "ppl", .log_y = true,
//                       .series = s, .n_series = 2};
//   gq_svg_plot_write(&p, "plot.svg");
//
// Each point is a <circle> (or <rect> / <path> marker) carrying data-x and
// data-y, inside <g class="series" data-name="...">, so tests can check the
// geometry against the data.
#ifndef GQ_SVGPLOT_H
#define GQ_SVGPLOT_H

#include "util/common.h"

struct gq_plot_series {
    const char *name;
    int n;
    const double *x, *y; // n points; non-finite ones (and y <= 0 on a log axis) are skipped
    bool lines;          // connect the points in order
};

struct gq_plot {
    const char *title, *xlabel, *ylabel;
    bool log_x, log_y;
    bool integer_x; // x ticks at whole numbers only (layer indices)
    const struct gq_plot_series *series;
    int n_series;
    const char *const *xtick_labels; // optional: category labels at x = 0, 1, ... (replaces numeric x ticks)
    int n_xtick_labels;
    int width, height; // pixels; 0: 720 x 440
};

// The whole SVG document as a malloc'd string.
enum gq_status gq_svg_plot(const struct gq_plot *p, char **out, size_t *len);
// Writes it to path (atomically).
enum gq_status gq_svg_plot_write(const struct gq_plot *p, const char *path);

#endif
