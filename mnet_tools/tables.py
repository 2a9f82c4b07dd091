"""Markdown tables whose columns line up in plain text, for the command line and the benchmark."""


def markdown_table(header, rows, right_aligned=()):
    """Rows of strings as a markdown table; columns in `right_aligned` (indices) align right.

    Example:
    ```python
    print(markdown_table(["preset", "MACs (M)"], [["mobilenetv1_025", "14.2"]], right_aligned={1}))
    ```
    """
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells):
        padded = (
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        )
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (width - 1) + ":" if i in right_aligned else "-" * width for i, width in enumerate(widths)]
    return "\n".join([line(header), line(rule), *(line(row) for row in rows)])
