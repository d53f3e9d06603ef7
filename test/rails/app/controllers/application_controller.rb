class ApplicationController < ActionController::Base
  protect_from_forgery with: :exception
  helper_method :session_name

  def session_name
    session[:name]
  end
end
