"""The point maze drawn under paths: its walls, a start and a goal, on the whole maze's extent (so panels side by
side share their axes)."""

from __future__ import annotations


def draw_maze(ax, geometry, start=None, goal=None, legend: bool = False) -> None:
    """Walls as grey cells, the start cell's centre as a green dot and the goal's as a red star, limits set to the
    maze, equal aspect and no ticks."""
    import matplotlib.pyplot as plt

    rows, cols = geometry.shape
    size = geometry.scaling
    for r in range(rows):
        for c in range(cols):
            if geometry.maze_map[r][c] == 1:
                x, y = geometry.cell_to_xy((r, c))
                ax.add_patch(plt.Rectangle((x - size / 2, y - size / 2), size, size, color="0.35"))
    if start is not None:
        ax.plot(*geometry.cell_to_xy(start), "o", color="tab:green", ms=9, label="start", zorder=3)
    if goal is not None:
        ax.plot(*geometry.cell_to_xy(goal), "*", color="tab:red", ms=14, label="goal", zorder=3)
    ax.set_xlim(-cols * size / 2, cols * size / 2)
    ax.set_ylim(-rows * size / 2, rows * size / 2)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        ax.legend(loc="lower right", fontsize=7)
