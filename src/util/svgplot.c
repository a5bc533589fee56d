// svgplot.c - see svgplot.h.
#include "util/svgplot.h"

#include <math.h>
#include <stdio.h>

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define N_PALETTE (int)(sizeof palette / sizeof *palette)

static void put_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f);
        }
}

struct axis {
    bool log, integer;
    double lo, hi;        // in axis units (log10 when log)
    double pix0, pix1;    // pixel positions of lo and hi
    double ticks[64];     // tick values (data units)
    int n_ticks;
};

static bool usable(double v, bool log) { return isfinite(v) && (!log || v > 0); }
static double to_axis(const struct axis *a, double v) { return a->log ? log10(v) : v; }
static double to_pix(const struct axis *a, double v) {
    return a->pix0 + (to_axis(a, v) - a->lo) / (a->hi - a->lo) * (a->pix1 - a->pix0);
}

// 1, 2 or 5 times a power of ten, near span / target.
static double nice_step(double span, int target) {
    double raw = span / target, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

// Range [lo, hi] (data units) padded, then its ticks.
static void axis_setup(struct axis *a, double lo, double hi) {
    if (a->log) lo = log10(lo), hi = log10(hi);
    if (!(hi > lo)) {
        double d = lo != 0 ? fabs(lo) * 0.1 : 1;
        lo -= d, hi += d;
    }
    double pad = (hi - lo) * 0.06;
    a->lo = lo - pad, a->hi = hi + pad;
    a->n_ticks = 0;
    if (a->log) { // mantissas per decade: the densest set giving at most 9 ticks
        static const double sets[4][10] = {{1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 5, 7}, {1, 2, 5}, {1}};
        static const int set_n[4] = {10, 5, 3, 1};
        for (int k = 0; k < 4; k++) {
            a->n_ticks = 0;
            for (int e = (int)floor(a->lo); e <= (int)ceil(a->hi) && a->n_ticks < 60; e++)
                for (int j = 0; j < set_n[k] && a->n_ticks < 60; j++) {
                    double v = sets[k][j] * pow(10, e);
                    if (log10(v) >= a->lo && log10(v) <= a->hi) a->ticks[a->n_ticks++] = v;
                }
            if (a->n_ticks <= 9) break;
        }
        return;
    }
    double vlo = a->log ? pow(10, a->lo) : a->lo, vhi = a->log ? pow(10, a->hi) : a->hi;
    double step = nice_step(vhi - vlo, 6);
    if (a->integer && step < 1) step = 1;
    for (double v = ceil(vlo / step) * step; v <= vhi + step * 1e-9 && a->n_ticks < 60; v += step)
        if (!a->log || v > 0) a->ticks[a->n_ticks++] = fabs(v) < step * 1e-9 ? 0 : v;
}

static void marker(FILE *f, int shape, double x, double y, const char *color, double dx, double dy) {
    switch (shape % 4) {
    case 0:
        fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"4\" fill=\"%s\"", x, y, color);
        break;
    case 1:
        fprintf(f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"7.5\" height=\"7.5\" fill=\"%s\"", x - 3.75, y - 3.75, color);
        break;
    case 2:
        fprintf(f, "<path d=\"M%.2f %.2fL%.2f %.2fL%.2f %.2fZ\" fill=\"%s\"", x, y - 5, x + 4.5, y + 3.5, x - 4.5,
                y + 3.5, color);
        break;
    default:
        fprintf(f, "<path d=\"M%.2f %.2fL%.2f %.2fL%.2f %.2fL%.2f %.2fZ\" fill=\"%s\"", x, y - 5, x + 5, y, x, y + 5,
                x - 5, y, color);
    }
    if (isfinite(dx)) fprintf(f, " data-x=\"%.9g\" data-y=\"%.9g\"", dx, dy);
    fputs("/>\n", f);
}

enum gq_status gq_svg_plot(const struct gq_plot *p, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    const int W = p->width > 0 ? p->width : 720, H = p->height > 0 ? p->height : 440;
    // the legend's width from its longest name
    size_t longest = 0;
    for (int s = 0; s < p->n_series; s++)
        if (p->series[s].name && strlen(p->series[s].name) > longest) longest = strlen(p->series[s].name);
    const double legend_w = 40 + 7.0 * (double)(longest < 30 ? longest : 30);
    struct axis ax = {.log = p->log_x, .integer = p->integer_x, .pix0 = 72, .pix1 = W - 24 - legend_w};
    struct axis ay = {.log = p->log_y, .pix0 = H - 56, .pix1 = 44};
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int s = 0; s < p->n_series; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!usable(x, ax.log) || !usable(y, ay.log)) continue;
            xlo = fmin(xlo, x), xhi = fmax(xhi, x), ylo = fmin(ylo, y), yhi = fmax(yhi, y);
        }
    if (!(xlo <= xhi)) xlo = ax.log ? 1 : 0, xhi = ax.log ? 10 : 1, ylo = ay.log ? 1 : 0, yhi = ay.log ? 10 : 1;
    if (p->n_xtick_labels > 0) xlo = fmin(xlo, 0), xhi = fmax(xhi, p->n_xtick_labels - 1);
    axis_setup(&ax, xlo, xhi);
    axis_setup(&ay, ylo, yhi);

    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return gq_fail(GQ_ERR_NOMEM, "out of memory");
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    if (p->title) {
        fprintf(f, "<text class=\"title\" x=\"%.1f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", (ax.pix0 + ax.pix1) / 2);
        put_escaped(f, p->title);
        fputs("</text>\n", f);
    }
    // grid, ticks and tick labels
    fputs("<g class=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n", f);
    for (int i = 0; i < ay.n_ticks; i++)
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\"/>\n", ax.pix0, to_pix(&ay, ay.ticks[i]), ax.pix1,
                to_pix(&ay, ay.ticks[i]));
    fputs("</g>\n<g class=\"ticks\" text-anchor=\"end\">\n", f);
    for (int i = 0; i < ay.n_ticks; i++)
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" data-value=\"%.9g\">%g</text>\n", ax.pix0 - 6, to_pix(&ay, ay.ticks[i]) + 4,
                ay.ticks[i], ay.ticks[i]);
    fputs("</g>\n<g class=\"ticks\" text-anchor=\"middle\">\n", f);
    if (p->n_xtick_labels > 0) {
        // category labels, thinned to what fits
        int every = 1;
        while ((ax.pix1 - ax.pix0) / p->n_xtick_labels * every < 28) every++;
        for (int i = 0; i < p->n_xtick_labels; i += every) {
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">", to_pix(&ax, i), ay.pix0 + 18);
            put_escaped(f, p->xtick_labels[i]);
            fputs("</text>\n", f);
        }
    } else {
        for (int i = 0; i < ax.n_ticks; i++)
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" data-value=\"%.9g\">%g</text>\n", to_pix(&ax, ax.ticks[i]),
                    ay.pix0 + 18, ax.ticks[i], ax.ticks[i]);
    }
    fputs("</g>\n", f);
    fprintf(f, "<rect class=\"frame\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#333333\"/>\n",
            ax.pix0, ay.pix1, ax.pix1 - ax.pix0, ay.pix0 - ay.pix1);
    if (p->xlabel) {
        fprintf(f, "<text class=\"xlabel\" x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">", (ax.pix0 + ax.pix1) / 2, H - 14);
        put_escaped(f, p->xlabel);
        fputs("</text>\n", f);
    }
    if (p->ylabel) {
        const double cy = (ay.pix0 + ay.pix1) / 2;
        fprintf(f, "<text class=\"ylabel\" x=\"18\" y=\"%.2f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.2f)\">",
                cy, cy);
        put_escaped(f, p->ylabel);
        fprintf(f, "%s</text>\n", p->log_y ? " (log scale)" : "");
    }
    // series, then the legend
    for (int s = 0; s < p->n_series; s++) {
        const struct gq_plot_series *se = &p->series[s];
        const char *color = palette[s % N_PALETTE];
        fputs("<g class=\"series\" data-name=\"", f);
        put_escaped(f, se->name);
        fprintf(f, "\" stroke=\"%s\">\n", color);
        if (se->lines) {
            bool open = false;
            for (int i = 0; i < se->n; i++) {
                if (!usable(se->x[i], ax.log) || !usable(se->y[i], ay.log)) continue;
                fprintf(f, "%s%.2f,%.2f", open ? " " : "<polyline fill=\"none\" stroke-width=\"1.6\" points=\"",
                        to_pix(&ax, se->x[i]), to_pix(&ay, se->y[i]));
                open = true;
            }
            if (open) fputs("\"/>\n", f);
        }
        for (int i = 0; i < se->n; i++)
            if (usable(se->x[i], ax.log) && usable(se->y[i], ay.log))
                marker(f, s, to_pix(&ax, se->x[i]), to_pix(&ay, se->y[i]), color, se->x[i], se->y[i]);
        fputs("</g>\n", f);
    }
    fputs("<g class=\"legend\">\n", f);
    for (int s = 0; s < p->n_series; s++) {
        const double lx = ax.pix1 + 16, ly = ay.pix1 + 10 + 20 * s;
        const char *color = palette[s % N_PALETTE];
        if (p->series[s].lines)
            fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"1.6\"/>\n", lx,
                    ly, lx + 22, ly, color);
        marker(f, s, lx + 11, ly, color, NAN, NAN);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">", lx + 30, ly + 4);
        put_escaped(f, p->series[s].name);
        fputs("</text>\n", f);
    }
    fputs("</g>\n</svg>\n", f);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return gq_fail(GQ_ERR_NOMEM, "out of memory");
    }
    *out = buf;
    *len = n;
    return GQ_OK;
}

enum gq_status gq_svg_plot_write(const struct gq_plot *p, const char *path) {
    char *svg = NULL;
    size_t n = 0;
    GQ_TRY(gq_svg_plot(p, &svg, &n));
    enum gq_status s = gq_write_file_atomic(path, svg, n);
    free(svg);
    return s;
}
