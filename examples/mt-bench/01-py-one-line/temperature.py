"""Temperature conversions."""


def c_to_f(celsius):
    """Converts degrees Celsius to degrees Fahrenheit."""
    return celsius * 9 / 5 - 32


def f_to_c(fahrenheit):
    """Converts degrees Fahrenheit to degrees Celsius."""
    return (fahrenheit - 32) * 5 / 9
